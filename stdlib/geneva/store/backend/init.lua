--[[
geneva.store.backend: the one door to persistent storage. Everything a
database keeps (versions, data and column files, staging, `_geneva/`
registries, job records, leases, markers) is read and written through it,
by path. A path under a mounted object store (an s3:// database's local
mirror, see geneva.store.backend.s3) goes to that store; any other path is
a plain file (geneva.store.backend.dir). Callers keep one shape of code for
both: they name files by the path they would have in a directory.

Every function returns the bindings' convention, `ok | nil, msg, code`,
with code "ENOENT" for a missing object, "EEXIST" for a lost conditional
create and "EINTR" for an interrupt, so errors.io and existing checks work
unchanged.

  backend.get(path [, {max=}]) -> bytes           the whole object; with max,
                                                  one of at most max bytes (and
                                                  in a directory a regular file,
                                                  no symlink): untrusted input;
                                                  with from=n, its bytes from
                                                  offset n on ("" past the end)
  backend.put(path, bytes [, {fsync=}]) -> true   atomic replace
  backend.put_if_absent(path, bytes [, {fsync=}]) -> true
                                                  | nil, msg, "EEXIST"
  backend.list(dir) -> names                      sorted; {} for nothing
  backend.list(dir, {details = true}) -> {{name=, size=, mtime=}, ...}
                                                  objects only (no subdirs)
  backend.delete(path) -> true                    (absent is fine)
  backend.delete_tree(dir) -> true
  backend.fetch(path) -> path                     the object as a local file
                                                  (immutable objects only)
  backend.upload(path [, {if_absent=}]) -> true   a local file at path becomes
                                                  the object at path
  backend.publish(src, dst) -> true               dst made from the local file
                                                  src, never replacing (EEXIST);
                                                  src stays
  backend.exists(path) -> boolean
  backend.is_remote(path) -> boolean
  backend.sync_dir(dir) -> true                   durable renames (dir only)
  backend.lock(path [, {timeout=}]) -> lock       an exclusive lock, :close()
                                                  | nil, msg, "EWOULDBLOCK"
]]
local dir = require "geneva.store.backend.dir"

local backend = {}

-- mounted object stores: local mirror root -> implementation
local mounts = {}

-- backend.mount(root, impl): paths under root go to impl (an object store
-- whose local mirror is root). Mounting the same root again replaces it.
function backend.mount(root, impl)
  root = root:gsub("/+$", "")
  mounts[root] = impl
end

-- backend.for_path(path) -> impl, key: the implementation serving path and
-- the path's key there (the path itself for plain files)
function backend.for_path(path)
  path = tostring(path)
  for root, impl in pairs(mounts) do
    if path == root then return impl, "" end
    if path:sub(1, #root + 1) == root .. "/" then return impl, path:sub(#root + 2) end
  end
  return dir, path
end

function backend.is_remote(path) return (backend.for_path(path)) ~= dir end

local function route(name)
  return function(path, ...)
    local impl, key = backend.for_path(path)
    return impl[name](impl, key, path, ...)
  end
end

backend.get = route("get")
backend.put = route("put")
backend.put_if_absent = route("put_if_absent")
backend.list = route("list")
backend.delete = route("delete")
backend.delete_tree = route("delete_tree")
backend.fetch = route("fetch")
backend.upload = route("upload")
backend.exists = route("exists")
backend.sync_dir = route("sync_dir")

-- backend.lock(path [, {timeout = s, stale = s}]) -> lock with :close()
-- (and <close>) | nil, msg, "EWOULDBLOCK": flock() in a directory, a
-- conditional object in a store (geneva.store.backend.s3)
backend.lock = route("lock")

-- src must be a local file (fetch() it first when it is an object)
function backend.publish(src, dst)
  local impl, dkey = backend.for_path(dst)
  return impl:publish(src, dkey, dst)
end

return backend
