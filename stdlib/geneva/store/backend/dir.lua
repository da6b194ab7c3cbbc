-- geneva.store.backend.dir: storage in a local directory (see
-- geneva.store.backend). Keys are the paths themselves; conditional
-- creates are link(), which gives EEXIST to every writer but one.
local fs = require "geneva.fs"

local Dir = {}

function Dir:get(_, path, opts)
  if opts and opts.max then return fs.read_regular(path, opts.max) end
  if opts and opts.from then
    local f, msg, errno = io.open(path, "rb")
    if not f then return nil, msg, errno == 2 and "ENOENT" or "EIO" end
    f:seek("set", opts.from)
    local bytes = f:read("a") or ""
    f:close()
    return bytes
  end
  return fs.read(path)
end

function Dir:put(_, path, bytes, opts)
  return fs.write_atomic(path, bytes, { fsync = not opts or opts.fsync ~= false, mode = opts and opts.mode })
end

function Dir:put_if_absent(_, path, bytes, opts)
  return fs.create_exclusive(path, bytes, { mode = opts and opts.mode, fsync = not opts or opts.fsync ~= false })
end

function Dir:list(_, path, opts)
  local names, msg, code = fs.list(path)
  if not names and (code == "ENOENT" or code == "ENOTDIR") then return {} end
  if not names or not (opts and opts.details) then return names, msg, code end
  local out = {}
  for _, name in ipairs(names) do
    local st = fs.stat(path .. "/" .. name, { follow = false })
    if st and st.type == "file" then out[#out + 1] = { name = name, size = st.size, mtime = st.mtime } end
  end
  return out
end

function Dir:delete(_, path)
  local ok, msg, code = fs.remove(path)
  if not ok and code == "ENOENT" then return true end
  return ok, msg, code
end

function Dir:delete_tree(_, path)
  local ok, msg, code = fs.remove_tree(path)
  if not ok and code == "ENOENT" then return true end
  return ok, msg, code
end

function Dir:fetch(_, path)
  if fs.exists(path) then return path end
  return nil, path .. ": no such file", "ENOENT"
end

function Dir:upload() return true end

function Dir:exists(_, path) return fs.exists(path) end

function Dir:sync_dir(_, path) return fs.fsync_dir(path) end

function Dir:lock(_, path, opts) return fs.lock(path, { timeout = opts and opts.timeout }) end

-- A hard link (src stays); file systems without them (some FUSE mounts),
-- or a src elsewhere, get a copy under the fresh name instead.
function Dir:publish(src, _, dst)
  local ok, msg, code = fs.link(src, dst)
  if ok or code == "EEXIST" then return ok, msg, code end
  if code == "EPERM" or code == "ENOTSUP" or code == "EOPNOTSUPP" or code == "EXDEV" then
    if fs.exists(dst) then return nil, dst .. ": exists", "EEXIST" end
    local n, cmsg, ccode = fs.copy(src, dst)
    if not n then return nil, cmsg, ccode end
    return true
  end
  return nil, msg, code
end

return Dir
