--- Manifest specs: what @{geneva.db.Db:define_manifest} and a context's
-- inline `manifest` accept: the code and files workers need.
--
-- - `modules`: Lua module names, resolved as `require` would on
--   `package.path` (`lua/<a/b>.lua` or `lua/<a/b>/init.lua` in the package,
--   on the workers' `package.path`)
-- - `files`: globs (`**` allowed), relative to the current directory or
--   `base_dir`; a file keeps its relative path
-- - `base_dir`: where `files` are taken from
-- - `env`: `{NAME = value | {from_env = "NAME"}}` for the workers
-- - `ship_host`: bundle this `geneva` and the libraries it needs beyond glibc
-- - `local_zip_output_dir`: keep a copy of the package's zip there
--
-- Defining packages the files into one zip, content-addressed by SHA-256
-- over the files' paths, sizes and contents and stored once in
-- `<db>/_geneva/packages/`: re-defining an unchanged manifest writes
-- nothing, and touching a file changes nothing. A Ray cluster gets a
-- package only when it does not have it; packages of 100 MiB or more are
-- refused, naming their largest files.
-- @module geneva.context.manifest
-- @usage db:define_manifest("udfs", { modules = { "my_udfs" }, files = { "models/**/*.bin" } })
-- geneva.context { cluster = "ray", manifest = "udfs" } (function() tbl:backfill("score") end)

-- Internals. Per-file hashes come from a stat cache
-- (<db>/_geneva/packages/stat-cache.json, keyed by real path; size,
-- mtime_ns, ctime_ns, ino, dev), so unchanged files are not read again.
-- geneva.zip.create is deterministic. Zip layout: lua/ for modules, files
-- at their relative paths, bin/geneva and lib/<soname> for ship_host (a
-- runner starts `LD_LIBRARY_PATH=<pkg>/lib <pkg>/bin/geneva worker` after
-- manifest.check_host(record) on the worker). The stat cache is shared by
-- all manifests of a db and never pruned (entries are ~150 bytes).
local fs = require "geneva.fs"
local backend = require "geneva.store.backend"
local json = require "geneva.json"
local errors = require "geneva.errors"
local cluster = require "geneva.context.cluster"
local registry = require "geneva.context.registry"
local sv = require "geneva.context.spec"   -- spec validation

local M = {}

M.MAX_UPLOAD = 100 * 1024 * 1024      -- Ray's package upload cap (HTTP body)
M.RACY_NS = 2000000000                -- files changed this recently are not cached
M.STALE_REFRESH_BYTES = 16 * 1024 * 1024  -- re-hashed-but-same bytes that refresh the cache
M.CACHE_FORMAT = 1

local KIND = "manifests"
local fail, expected, sub = sv.fail, sv.expected, sv.sub

local io_check = errors.io

-- {===== spec validation

local function list_of_strings(path, v, check)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then expected(path, "a list of strings", v) end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then expected(path, "a list of strings", v) end
  end
  local out = json.array()
  for i = 1, n do
    if type(v[i]) ~= "string" or v[i] == "" then expected(sub(path, i), "a non-empty string", v[i]) end
    if check then check(sub(path, i), v[i]) end
    out[i] = v[i]
  end
  return out
end

local function module_name(path, v)
  if not v:match("^[%a_][%w_]*$") and not v:match("^[%a_][%w_]*[%w_.]*[%w_]$") or v:find("..", 1, true) then
    fail(path, ("bad module name '%s'"):format(v))
  end
end

local function relative_pattern(path, v)
  if v:sub(1, 1) == "/" then
    fail(path, ("'%s' is absolute: files are relative to base_dir (set base_dir)"):format(v))
  end
  for seg in (v .. "/"):gmatch("([^/]*)/") do
    if seg == ".." then fail(path, ("'%s' leaves the base directory: set base_dir"):format(v)) end
  end
end

local function directory(path, v)
  if type(v) ~= "string" or v == "" then expected(path, "a directory path", v) end
  return v
end

local FIELDS = {
  name = function(p, v) if type(v) ~= "string" then expected(p, "a string", v) end return v end,
  modules = function(p, v) return list_of_strings(p, v, module_name) end,
  files = function(p, v) return list_of_strings(p, v, relative_pattern) end,
  env = function(p, v) return cluster.check_env(v, p) end,
  ship_host = sv.bool,
  local_zip_output_dir = directory,
  base_dir = directory,
  rocks = function(p) fail(p, "not supported yet (ship the modules with `modules` or `files`)") end,
}

--[[
M.validate(spec [, where]) -> normalized copy | raises invalid_argument
Like geneva.context.cluster.validate: unknown fields, wrong types, bad module names,
absolute or '..' file patterns and plain-string secrets in env are refused
with the field's path. A single string is accepted for modules and files.
]]
function M.validate(spec, where)
  where = where or ""
  if type(spec) ~= "table" then expected(where, "a manifest spec table", spec) end
  return sv.check_fields(where, spec, FIELDS, "a manifest spec table")
end

-- }=====

-- {===== collecting entries

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end
local function basename(p) return p:match("([^/]*)$") end

local function glob_escape(s) return (s:gsub("[%*%?%[%]{}\\]", "\\%0")) end

-- Resolves a module as require would on package.path; raises naming it
-- (in one line: the dozen files searchpath tried say nothing more).
local function resolve_module(path, name, base)
  local found = package.searchpath(name, package.path)
  if not found then
    local c = package.searchpath(name, package.cpath)
    if c then
      fail(path, ("module '%s' is a C module (%s): ship it in the worker image"):format(name, c))
    end
    fail(path, ("module '%s' not found on package.path"):format(name))
  end
  local rel = name:gsub("%.", "/")
  local zipname = "lua/" .. rel .. ".lua"
  if found:sub(-#("/" .. rel .. "/init.lua")) == "/" .. rel .. "/init.lua" or found == rel .. "/init.lua" then
    zipname = "lua/" .. rel .. "/init.lua"
  end
  if found:sub(1, 1) ~= "/" then found = base .. "/" .. found:gsub("^%./", "") end
  return zipname, found
end

-- Adds files matched by pattern under base to add(zipname, path).
local function expand_files(path, pattern, base, add)
  -- "x/." and "./x" name the same files as "x"
  pattern = pattern:gsub("/%.$", ""):gsub("^%./", ""):gsub("/%./", "/")
  local whole = pattern == "."
  local matches = whole and { base } or io_check(fs.glob(glob_escape(base) .. "/" .. pattern))
  local recursive = pattern:find("**", 1, true) ~= nil
  local n = 0
  local prefix = base .. "/"
  for _, m in ipairs(matches) do
    local st = fs.stat(m)
    local rel = m:sub(1, #prefix) == prefix and m:sub(#prefix + 1) or m
    if st and st.type == "file" then
      add(rel, m, st) n = n + 1
    elseif st and st.type == "dir" and not recursive then
      -- a directory stands for its files (hidden ones and symlinked dirs skipped)
      local pre = whole and "" or rel .. "/"
      for _, r in ipairs(io_check(fs.walk(m))) do
        local hidden = ("/" .. r):find("/%.")
        local full = m .. "/" .. r
        local s2 = not hidden and fs.stat(full)
        if s2 and s2.type == "file" then add(pre .. r, full, s2) n = n + 1 end
      end
    end
  end
  if n == 0 then fail(path, ("'%s' matches no file (relative to %s)"):format(pattern, base)) end
end

-- Shared libraries the binary needs beyond glibc, with those of the
-- libraries geneva loads on first use in a worker (zip, sqlite, crypto).
-- Returns {{soname, path}...} from ldd; empty when ldd is missing.
local GLIBC_LIBS = { "^libc%.so", "^libm%.so", "^libdl%.so", "^libpthread%.so", "^librt%.so",
  "^libresolv%.so", "^libutil%.so", "^ld%-linux", "^ld64%.so", "^libanl%.so", "^linux%-vdso",
  "^libgcc_s%.so", "^libstdc%+%+%.so", "^libz%.so" }
local LAZY_LIBS = { "libzip.so.4", "libsqlite3.so.0", "libcrypto.so.3" }

local function is_stock(soname)
  for _, p in ipairs(GLIBC_LIBS) do if soname:match(p) then return true end end
  return false
end

local function ldd(path, out, seen)
  local p = io.popen("ldd " .. ("'" .. path:gsub("'", "'\\''") .. "'") .. " 2>/dev/null")
  if not p then return end
  for line in p:lines() do
    local so, target = line:match("^%s*(%S+)%s+=>%s+(/%S+)")
    if so and not is_stock(so) and not seen[so] then
      seen[so] = true
      out[#out + 1] = { so, target }
    end
  end
  p:close()
end

function M.host_libs(exe)
  local out, seen = {}, {}
  ldd(exe, out, seen)
  -- the lazily loaded libraries: where this process found them
  for _, m in ipairs({ "geneva.zip.core", "geneva.sqlite.core", "geneva.fs.core" }) do pcall(require, m) end
  local maps = io.open("/proc/self/maps")
  local paths = {}
  if maps then
    for line in maps:lines() do
      local p = line:match("%s(/%S+%.so[%.%d]*)$")
      if p then paths[basename(p)] = paths[basename(p)] or p end
    end
    maps:close()
  end
  for _, so in ipairs(LAZY_LIBS) do
    local p = paths[so]
    if not p then
      for name, full in pairs(paths) do
        if name:sub(1, #so) == so then p = full break end
      end
    end
    if p and not seen[so] then
      seen[so] = true
      out[#out + 1] = { so, p }
      ldd(p, out, seen)
    end
  end
  table.sort(out, function(a, b) return a[1] < b[1] end)
  return out
end

-- }=====

-- {===== host description and checks

local read_file = fs.read   -- bytes | nil, msg, code

-- M.machine() -> `uname -m` of this host
function M.machine()
  local a = read_file("/proc/sys/kernel/arch")
  a = a and a:match("^%s*(%S+)")
  if a then return a end
  local p = io.popen("uname -m 2>/dev/null")
  a = p and p:read("l")
  if p then p:close() end
  return a or "unknown"
end

-- M.local_host() -> {os = "linux", arch = "x86_64", glibc = "2.36" | nil}
-- glibc comes from the version definitions of the libc this process runs on.
function M.local_host()
  local elf = require "geneva.context.elf"
  local host = { os = "linux", arch = M.machine() }
  local maps = io.open("/proc/self/maps")
  local libc
  if maps then
    for line in maps:lines() do
      libc = line:match("%s(/%S*/libc%.so%.6)$") or line:match("%s(/%S*/libc%-[%d.]+%.so)$")
      if libc then break end
    end
    maps:close()
  end
  local info = libc and elf.parse(read_file(libc) or "")
  host.glibc = info and elf.max_glibc(info.versions_defined)
  if not host.glibc then
    local p = io.popen("getconf GNU_LIBC_VERSION 2>/dev/null")
    local v = p and p:read("l")
    if p then p:close() end
    host.glibc = v and v:match("(%d+%.%d+)")
  end
  return host
end

-- M.describe_binary(exe, libs) -> {os, arch, glibc_min, libs, bundled}:
-- what a worker needs to run exe with the bundled libraries.
function M.describe_binary(exe, libs)
  local elf = require "geneva.context.elf"
  local info, err = elf.parse(read_file(exe) or "")
  if not info then errors.throw("internal", ("ship_host: cannot read %s: %s"):format(exe, err)) end
  local glibc = elf.glibc_min(info)
  local bundled = json.array()
  for i, l in ipairs(libs) do
    bundled[i] = l[1]
    local li = elf.parse(read_file(l[2]) or "")
    local g = li and elf.glibc_min(li)
    if g and (not glibc or elf.version_cmp(g, glibc) > 0) then glibc = g end
  end
  return { os = "linux", arch = M.machine(), elf_machine = info.machine, glibc_min = glibc,
           libs = json.array(info.needed), bundled = bundled }
end

--[[
M.check_host(record [, host]) -> true | raises unavailable
For a package built with ship_host: the worker (host, default
M.local_host()) must have the same OS and architecture and a glibc at least
as new as the package's glibc_min. Packages without ship_host pass.
]]
function M.check_host(record, host)
  local want = record and record.host
  if not want then return true end
  host = host or M.local_host()
  local elf = require "geneva.context.elf"
  local ok = want.os == host.os and want.arch == host.arch
      and (not want.glibc_min or (host.glibc and elf.version_cmp(host.glibc, want.glibc_min) >= 0))
  if not ok then
    errors.throw("unavailable", ("package %s built for %s/%s glibc %s; this worker is %s/%s glibc %s")
      :format(record.name and ("'" .. record.name .. "'") or (record.checksum or ""):sub(1, 12),
        want.os, want.arch, want.glibc_min or "?", host.os, host.arch, host.glibc or "?"))
  end
  return true
end

--[[
M.check_size(record, cluster_type) -> record | raises invalid_argument
Ray (and so KubeRay) refuses uploads over 100 MiB: such packages are refused
up front for those cluster types, naming their largest files. (A body of
exactly 100 MiB is refused too; the Ray runner checks that before uploading.)
]]
function M.check_size(record, cluster_type)
  if (cluster_type == "ray" or cluster_type == "kuberay") and (record.size or 0) > M.MAX_UPLOAD then
    local files = {}
    for i, f in ipairs(record.files or {}) do files[i] = f end
    table.sort(files, function(a, b) return (a.size or 0) > (b.size or 0) end)
    local top = {}
    for i = 1, math.min(5, #files) do top[i] = ("%s (%.1f MiB)"):format(files[i].path, (files[i].size or 0) / 1048576) end
    errors.throw("invalid_argument", ("manifest '%s': package is %.1f MiB, over Ray's 100 MiB upload limit for %s clusters%s; keep large data in the database or object storage, not in the manifest")
      :format(record.name or "?", record.size / 1048576, cluster_type,
              #top > 0 and ("; largest files: " .. table.concat(top, ", ")) or ""))
  end
  return record
end

-- }=====

-- {===== stat cache and hashing

local function cache_path(db) return registry.dir(db, "packages") .. "/stat-cache.json" end

local function load_cache(db)
  local data = fs.read(cache_path(db))
  local c = data and json.decode(data)
  if type(c) ~= "table" or c.format ~= M.CACHE_FORMAT or type(c.entries) ~= "table" then
    return { format = M.CACHE_FORMAT, entries = {} }, nil
  end
  return c, data
end

-- Hashes entries in place (e.sha256, e.size, e.stat), through the cache.
-- Returns whether the cache changed enough to be written.
local function hash_entries(entries, cache)
  local now_ns = math.floor(require("geneva.time").now() * 1e9)
  local realdirs, dirty, stale_bytes = {}, false, 0
  for _, e in ipairs(entries) do
    local st = e.stat or io_check(fs.stat(e.path))   -- collect() may have it already
    if st.type ~= "file" then fail("files", ("%s is not a regular file"):format(e.path)) end
    local d = dirname(e.path)
    local rd = realdirs[d]
    if not rd then rd = io_check(fs.realpath(d)) realdirs[d] = rd end
    local key = rd .. "/" .. basename(e.path)
    local c = cache.entries[key]
    if c and c[1] == st.size and c[2] == st.mtime_ns and c[3] == st.ctime_ns and c[4] == st.ino and c[5] == st.dev then
      e.sha256, e.size = c[6], st.size
    else
      local hex, size = io_check(fs.sha256_file(e.path))
      e.sha256, e.size = hex, size
      if now_ns - math.max(st.mtime_ns, st.ctime_ns) >= M.RACY_NS and size == st.size then
        if c and c[6] == hex then
          stale_bytes = stale_bytes + size   -- touched only: refresh lazily
        else
          dirty = true
        end
        cache.entries[key] = json.array{ st.size, st.mtime_ns, st.ctime_ns, st.ino, st.dev, hex }
      end
    end
    e.stat = st
  end
  return dirty or stale_bytes > M.STALE_REFRESH_BYTES
end

local function same_stat(a, b)
  return a and b and a.size == b.size and a.mtime_ns == b.mtime_ns and a.ctime_ns == b.ctime_ns and a.ino == b.ino
end

-- }=====

-- {===== building

-- Collects the entries of a normalized spec: array of {name, path, mode}
-- (sources_only: the modules and files, without the host's binary).
local function collect(spec, sources_only)
  local base = spec.base_dir and io_check(fs.realpath(spec.base_dir)) or io_check(fs.getcwd())
  local entries, by_name = {}, {}
  local function add(name, path, what, mode, st)
    local prev = by_name[name]
    if prev then
      if prev.path == path then return end
      fail(what, ("'%s' would be packaged twice (%s and %s)"):format(name, prev.path, path))
    end
    local e = { name = name, path = path, mode = mode, stat = st }
    by_name[name] = e
    entries[#entries + 1] = e
  end
  local cwd = io_check(fs.getcwd())
  for i, m in ipairs(spec.modules or {}) do
    local zipname, found = resolve_module(sub("modules", i), m, cwd)
    add(zipname, found, sub("modules", i))
  end
  for i, pat in ipairs(spec.files or {}) do
    local where = sub("files", i)
    expand_files(where, pat, base, function(rel, path, st) add(rel, path, where, nil, st) end)
  end
  local host
  if spec.ship_host and not sources_only then
    local exe = io_check(require("geneva.host.core").worker_exe())   -- geneva, not an embedder
    add("bin/geneva", exe, "ship_host", "exec")
    local libs = M.host_libs(exe)
    for _, l in ipairs(libs) do add("lib/" .. l[1], l[2], "ship_host") end
    host = M.describe_binary(exe, libs)
  end
  local sorted = true   -- walks give sorted lists: skip the sort when possible
  for i = 2, #entries do
    if entries[i - 1].name >= entries[i].name then sorted = false break end
  end
  if not sorted then table.sort(entries, function(x, y) return x.name < y.name end) end
  return entries, host
end

--[[
M.check_sources(spec) -> number of files | raises
What define would find missing, without packaging anything: a module not
on package.path, a file pattern matching nothing, a base_dir that does not
exist (the messages define gives, with the field's path). For `recipe
validate`.
]]
function M.check_sources(spec)
  return #(collect(M.validate(spec), true))
end

-- Whether two records differ only in their times. The file list is
-- covered by the checksum (a hash of it), so it is not compared again.
local function same_record(a, b)
  for k, v in pairs(a) do
    if k ~= "updated_at" and k ~= "created_at" and k ~= "files" then
      if type(v) == "table" or type(b[k]) == "table" then
        if type(b[k]) ~= type(v) or json.canonical(v) ~= json.canonical(b[k]) then return false end
      elseif v ~= b[k] then
        return false
      end
    end
  end
  for k in pairs(b) do
    if a[k] == nil and k ~= "updated_at" and k ~= "created_at" then return false end
  end
  return type(a.files) == "table" and type(b.files) == "table" and #a.files == #b.files
end

--[[
M.define(db, name, spec) -> record | raises
Validates, packages and records the manifest (see the header). Raises
invalid_argument for a bad spec or unresolvable module/file, unavailable for
I/O errors, conflict when files change while they are being packaged.
record: {name, checksum, size (zip bytes), content_size, file_count, files =
[{path, size, sha256}], package (path relative to the db), spec, host
(ship_host), created_at, updated_at}.
]]
function M.define(db, name, spec)
  registry.check_name("manifest", name)
  local norm = M.validate(spec)
  if norm.name and norm.name ~= name then
    fail("name", ("'%s' differs from the manifest's name '%s'"):format(norm.name, name))
  end
  local entries, host = collect(norm)

  local cache, cache_bytes = load_cache(db)
  local cache_dirty = hash_entries(entries, cache)

  local files, list, total = json.array(), json.array(), 0
  for i, e in ipairs(entries) do
    files[i] = { path = e.name, size = e.size, sha256 = e.sha256 }
    list[i] = json.array{ e.name, e.size, e.sha256 }
    total = total + e.size
  end
  local checksum = fs.sha256(json.canonical(list))

  local pkgdir = registry.dir(db, "packages")
  local zpath = pkgdir .. "/" .. checksum .. ".zip"
  -- in an s3 database the zip is built in the mirror, then uploaded
  if not backend.exists(zpath) and not fs.exists(zpath) then
    io_check(fs.mkdir_p(pkgdir))
    local zentries = {}
    for i, e in ipairs(entries) do zentries[i] = { name = e.name, path = e.path, mode = e.mode } end
    io_check(require("geneva.zip").create(zpath, zentries))
    for _, e in ipairs(entries) do   -- the zip must hold what was hashed
      if not same_stat(e.stat, fs.stat(e.path)) then
        fs.remove(zpath)
        errors.throw("conflict", ("manifest '%s': %s changed while it was being packaged; define again"):format(name, e.path))
      end
    end
  end
  if not backend.exists(zpath) then io_check(backend.upload(zpath)) end
  local zst = io_check(fs.stat(io_check(backend.fetch(zpath))))

  if norm.local_zip_output_dir then
    local dir = norm.local_zip_output_dir
    local dst = dir .. "/" .. checksum .. ".zip"
    local dst_st = fs.stat(dst)
    if not dst_st or dst_st.size ~= zst.size then
      io_check(fs.mkdir_p(dir))
      local tmp = dst .. ".tmp"
      io_check(fs.copy(zpath, tmp))
      io_check(fs.rename(tmp, dst))
    end
  end

  if cache_dirty then
    local data = json.canonical(cache) .. "\n"
    if data ~= cache_bytes then
      io_check(fs.mkdir_p(pkgdir))
      io_check(fs.write_atomic(cache_path(db), data, { fsync = false }))   -- only a cache
    end
  end

  local rec = { name = name, checksum = checksum, size = zst.size, content_size = total,
                file_count = #files, files = files, spec = norm, host = host,
                package = "_geneva/packages/" .. checksum .. ".zip" }
  local old, old_bytes = registry.read(db, KIND, name)
  local now = require("geneva.time").iso8601()
  if old and same_record(old, rec) then return old end
  rec.created_at = old and old.created_at or now
  rec.updated_at = now
  registry.write(db, KIND, name, rec, old_bytes)
  return rec
end

-- M.package_path(db, record) -> local path of the record's zip (an s3
-- database's is downloaded into its mirror once)
function M.package_path(db, rec)
  return io_check(backend.fetch(registry.dir(db, "packages") .. "/" .. rec.checksum .. ".zip"))
end

-- M.lua_path(dir) -> the package.path entries of a package unpacked in
-- dir: its modules (lua/) first, then its files' root, so a module shipped
-- either way (`modules`, or a .lua file in `files`) is found by require
function M.lua_path(dir)
  return ("%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua;%s/?/init.lua;"):format(dir, dir, dir, dir)
end

-- M.unpack(scope, db, rec) -> dir: the record's package unpacked into a
-- temp dir owned by scope (leased before it exists; gone with the scope)
function M.unpack(scope, db, rec)
  local res = scope:reserve("tmpdir", "package " .. rec.checksum:sub(1, 12))
  local prev = scope:activate()
  local tmp, terr = fs.tmpdir("geneva-pkg-")
  prev:activate()
  if not tmp then
    res:forget()
    errors.throw("unavailable", ("cannot create a directory for the manifest package: %s"):format(terr))
  end
  res:update{ path = tmp.path }
  res:bind(function() tmp:close() end)
  local ok, err, code = require("geneva.zip").extract(M.package_path(db, rec), tmp.path)
  if not ok then errors.throw("unavailable", ("cannot unpack manifest package: %s (%s)"):format(err, code)) end
  return tmp.path
end

-- M.get(db, name) -> record | nil, Error(not_found). A probe: never raises
-- for an unknown name; raises for unreadable records.
function M.get(db, name) return registry.find(db, KIND, name) end

-- M.list(db) -> array of records, sorted by name
function M.list(db) return (registry.list(db, KIND)) end

-- M.delete(db, name) -> true | raises not_found. The package stays: other
-- manifests may share it (same checksum).
function M.delete(db, name) return registry.delete(db, KIND, name) end

-- }=====

return M
