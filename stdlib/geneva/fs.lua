-- geneva.fs: files, directories, hashing, temp dirs and locks.
--
-- Every function returns nil, msg, code on an expected failure (code is an
-- errno name such as "ENOENT" or "EEXIST", msg names the path) and raises on
-- misuse (wrong argument types). Long loops return nil, "interrupted",
-- "EINTR" after SIGINT/TERM/HUP. Results are sorted by bytes, not by locale.
local core = require("geneva.fs.core")

local fs = {}

-- Plain wrappers: see bindings/fs.c for each contract.
fs.read = core.read                    -- (path) -> bytes
fs.read_regular = core.read_regular    -- (path, max) -> bytes: a regular file only, no symlink, <= max
fs.link = core.link                    -- (src, dst) -> true
fs.symlink = core.symlink              -- (target, linkpath) -> true
fs.rename = core.rename                -- (a, b) -> true
fs.remove = core.remove                -- (path) -> true: file, link or empty dir
fs.remove_tree = core.remove_tree      -- (path) -> true: never follows links
fs.copy = core.copy                    -- (src, dst) -> bytes copied
fs.realpath = core.realpath            -- (path) -> absolute path
fs.fsync_dir = core.fsync_dir          -- (dir) -> true
fs.getcwd = core.getcwd                -- () -> path
fs.home = core.home                    -- () -> path
fs.isatty = core.isatty                -- ([fd = 2]) -> boolean
fs.sha256 = core.sha256                -- (s) -> hex
fs.sha256_file = core.sha256_file      -- (path) -> hex, size
fs.sha256_new = core.sha256_new        -- () -> hasher: update, update_file, hex, close
fs.tmpdir = core.tmpdir                -- ([prefix]) -> TempDir: .path, :close()

local function opt(opts, argn)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("bad argument #%d (options table expected, got %s)"):format(argn, type(opts)), 3)
  end
  return opts
end

-- fs.mkdir_p(path [, mode=0777]) -> true: creates path and its parents.
function fs.mkdir_p(path, mode)
  return core.mkdir_p(path, mode)
end

-- fs.stat(path [, {follow=true}]) -> {type="file"|"dir"|"link"|..., size,
-- mode, mtime (float s), atime, mtime_ns, ctime_ns, ino, dev, nlink, uid, gid}.
-- follow=false describes a symlink itself (type "link").
function fs.stat(path, opts)
  opts = opt(opts, 2)
  return core.stat(path, opts.follow ~= false)
end

-- fs.exists(path) -> boolean (follows symlinks: a dangling link is false).
function fs.exists(path)
  return core.stat(path, true) ~= nil
end

-- fs.list(dir) -> sorted array of entry names (no "." and "..").
function fs.list(dir)
  local names, msg, code = core.readdir(dir)
  if not names then return nil, msg, code end
  return core.sort(names)
end

local function join(dir, name)
  if dir:sub(-1) == "/" then return dir .. name end
  return dir .. "/" .. name
end

-- fs.walk(dir [, {dirs=false, ignore_errors=false}]) -> sorted array of paths
-- relative to dir, recursively: every non-directory entry (symlinks
-- included, never followed), plus directories with dirs=true. A subdirectory
-- that vanishes meanwhile is skipped; with ignore_errors, unreadable ones too.
function fs.walk(dir, opts)
  opts = opt(opts, 2)
  local out, with_dirs, lenient = {}, opts.dirs, opts.ignore_errors
  local function visit(abs, rel)
    if core.interrupted() then return nil, "interrupted", "EINTR" end
    local names, types, code = core.readdir(abs)
    if not names then
      if rel ~= "" and code ~= "EINTR" and (code == "ENOENT" or lenient) then return true end
      return nil, types, code
    end
    for i, name in ipairs(names) do
      local r = rel == "" and name or rel .. "/" .. name
      if types[i] == "dir" then
        if with_dirs then out[#out + 1] = r end
        local ok, msg, c = visit(join(abs, name), r)
        if not ok then return nil, msg, c end
      else
        out[#out + 1] = r
      end
    end
    return true
  end
  local ok, msg, code = visit(dir, "")
  if not ok then return nil, msg, code end
  return core.sort(out)
end

-- {====== glob with "**"

-- Expands the first top-level {a,b} group, recursively: "x{a,b}y" -> xay, xby.
local function expand_braces(p, out)
  local depth, open, commas = 0, nil, {}
  local i = 1
  while i <= #p do
    local ch = p:sub(i, i)
    if ch == "\\" then
      i = i + 1
    elseif ch == "{" then
      depth = depth + 1
      if depth == 1 then open, commas = i, {} end
    elseif ch == "," and depth == 1 then
      commas[#commas + 1] = i
    elseif ch == "}" and depth > 0 then
      depth = depth - 1
      if depth == 0 and #commas > 0 then
        local pre, post, last = p:sub(1, open - 1), p:sub(i + 1), open
        commas[#commas + 1] = i
        for _, c in ipairs(commas) do
          expand_braces(pre .. p:sub(last + 1, c - 1) .. post, out)
          last = c
        end
        return out
      end
    end
    i = i + 1
  end
  out[#out + 1] = p
  return out
end

local function split(path)
  local segs = {}
  for s in (path .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = s end
  return segs
end

-- Does segs[j..] match pats[i..]? "**" spans zero or more non-hidden segments.
local function match_segs(pats, i, segs, j)
  if i > #pats then return j > #segs end
  if pats[i] == "**" then
    if match_segs(pats, i + 1, segs, j) then return true end
    return j <= #segs and segs[j]:sub(1, 1) ~= "." and match_segs(pats, i, segs, j + 1)
  end
  return j <= #segs and core.fnmatch(pats[i], segs[j]) and match_segs(pats, i + 1, segs, j + 1)
end

-- One brace-free pattern holding a "**" segment: glob the part before it,
-- walk each base, match the rest segment by segment.
local function glob_recursive(segs, k, out)
  local bases
  if k == 1 then
    bases = { { ".", "" } }
  else
    local prefix = table.concat(segs, "/", 1, k - 1)
    if prefix == "" then
      bases = { { "/", "/" } }
    else
      bases = {}
      local found = core.glob(prefix) or {}
      for _, b in ipairs(found) do
        local st = core.stat(b, true)
        if st and st.type == "dir" then bases[#bases + 1] = { b, b .. "/" } end
      end
    end
  end
  local rest = { table.unpack(segs, k) }
  for _, base in ipairs(bases) do
    local entries, msg, code = fs.walk(base[1], { dirs = true, ignore_errors = true })
    if not entries then
      if code == "EINTR" then return nil, msg, code end
    else
      for _, rel in ipairs(entries) do
        if match_segs(rest, 1, split(rel), 1) then out[#out + 1] = base[2] .. rel end
      end
    end
  end
  return true
end

-- fs.glob(pattern) -> sorted array of matching paths (empty when none).
-- glob(3) with {a,b} braces; a "**" segment matches zero or more directory
-- levels (not hidden ones, and symlinked dirs are not entered).
function fs.glob(pattern)
  if type(pattern) ~= "string" then
    error(("bad argument #1 to 'glob' (string expected, got %s)"):format(type(pattern)), 2)
  end
  local out, seen = {}, {}
  local pats = pattern:find("**", 1, true) and expand_braces(pattern, {}) or { pattern }
  for _, p in ipairs(pats) do
    local segs, k = split(p), nil
    for i, s in ipairs(segs) do
      if s == "**" then k = i break end
    end
    if k then
      local ok, msg, code = glob_recursive(segs, k, out)
      if not ok then return nil, msg, code end
    else
      local found, msg, code = core.glob(p)
      if not found then return nil, msg, code end
      for _, f in ipairs(found) do out[#out + 1] = f end
    end
  end
  local uniq = {}
  for _, f in ipairs(out) do
    if not seen[f] then seen[f] = true uniq[#uniq + 1] = f end
  end
  return core.sort(uniq)
end

-- }======

-- fs.write(path, data [, {mode=0666, fsync=false}]) -> true. Truncates.
function fs.write(path, data, opts)
  opts = opt(opts, 3)
  return core.write(path, data, opts.mode, opts.fsync, false)
end

-- fs.append(path, data [, {mode=0666, fsync=false}]) -> true.
function fs.append(path, data, opts)
  opts = opt(opts, 3)
  return core.write(path, data, opts.mode, opts.fsync, true)
end

-- fs.write_atomic(path, data [, {mode=0666, fsync=true}]) -> true: temp file
-- in the same dir, fsync, rename, fsync the dir. Readers see old or new.
function fs.write_atomic(path, data, opts)
  opts = opt(opts, 3)
  return core.write_atomic(path, data, opts.mode, opts.fsync ~= false)
end

-- fs.create_exclusive(path, data [, {mode=0666, fsync=true}]) -> true |
-- nil, msg, "EEXIST". Publishes a complete, synced file with link(): of
-- racing writers exactly one wins, and no reader sees a partial file
-- (fsync = false: still, only not durable across a machine crash). Temp
-- files are named ".<name>.tmp.<hex>" next to path.
function fs.create_exclusive(path, data, opts)
  opts = opt(opts, 3)
  return core.create_exclusive(path, data, opts.mode, opts.fsync ~= false)
end

-- fs.utime(path [, atime [, mtime]]) -> true: float seconds; mtime defaults
-- to atime, both to now.
function fs.utime(path, atime, mtime)
  if mtime == nil then mtime = atime end
  return core.utime(path, atime, mtime)
end

-- fs.lock(path [, {exclusive=true, wait=true, timeout=nil}]) -> Lock |
-- nil, msg, "EWOULDBLOCK". flock on path (created if missing); the Lock is
-- ledger-tracked; :unlock() / :close() / <close> are idempotent.
function fs.lock(path, opts)
  opts = opt(opts, 2)
  return core.lock(path, opts.exclusive ~= false, opts.wait ~= false, opts.timeout)
end

-- fs.state_dir() -> $XDG_STATE_HOME/geneva or ~/.local/state/geneva, created.
function fs.state_dir()
  local base = os.getenv("XDG_STATE_HOME")
  if not base or base == "" then
    local home, msg, code = core.home()
    if not home then return nil, msg, code end
    base = join(home, ".local/state")
  end
  local dir = join(base, "geneva")
  local ok, msg, code = core.mkdir_p(dir, 448)   -- 0700: leases, job records
  if not ok then return nil, msg, code end
  return dir
end

-- fs.random_hex([n=16]) -> n hex digits for unique file names, from
-- /dev/urandom: math.random is not enough, as processes started in the same
-- second can share its seed (seen under ASan, where addresses repeat).
function fs.random_hex(n)
  n = n or 16
  local bytes
  local f = io.open("/dev/urandom", "rb")
  if f then
    bytes = f:read((n + 1) // 2)
    f:close()
  end
  if not bytes or #bytes < (n + 1) // 2 then
    local parts = {}
    for i = 1, math.ceil(n / 8) do parts[i] = ("%08x"):format(math.random(0, 0xffffffff)) end
    return table.concat(parts):sub(1, n)
  end
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)):sub(1, n)
end

return fs
