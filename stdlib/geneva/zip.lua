-- geneva.zip: deterministic zip archives and safe extraction (libzip).
--
-- Archives made by zip.create are content-addressable: the same entries give
-- the same bytes whatever their order, the files' mtimes or owners, and the
-- time zone. Extraction refuses zip-slip and zip bombs (see bindings/zip.c):
-- opts.max_size (bytes unpacked in all, default 1 GiB) and opts.max_ratio
-- (an entry's size / compressed size past 1 MiB, default 100) are checked
-- on the declared sizes first and on the bytes inflated while extracting,
-- failing with "ZIP_LIMIT" and a message naming the archive.
local core = require "geneva.zip.core"

local zip = {}

-- Whether an entry's `mode` asks for the executable bit. Accepts "exec",
-- true/false, "0755"/"755"/"0644"/"644", numeric modes (0x1ed = 0755), and
-- the decimal 755/644 that a Lua literal `0755` / `0644` actually is.
local function is_exec(mode, i)
  local t = type(mode)
  if mode == nil or t == "boolean" then return mode == true end
  if t == "string" then
    if mode == "exec" then return true end
    local n = mode:match("^0?([0-7][0-7][0-7])$")
    if n then return tonumber(n, 8) & 73 ~= 0 end   -- 73 = 0111
  elseif math.type(mode) == "integer" then
    if mode == 755 then return true end
    if mode == 644 then return false end
    if mode >= 0 and mode <= 4095 then return mode & 73 ~= 0 end
  end
  error(("bad argument #2 to 'create' (entry #%d: bad mode %s)"):format(i, tostring(mode)), 3)
end

-- zip.create(path, entries [, opts]) -> true | nil, msg, code
-- entries: array of {name = "a/b.lua", path = "/abs/file" | data = "bytes",
-- mode = 0755 | "exec" | nil}. opts: level 1..9 (default 1), method
-- "deflate" (default) | "store". Entries are written sorted by name with a
-- fixed time (1980-01-01) and modes 0644/0755. Raises on misuse (types, bad
-- options); returns nil, msg, code for bad or duplicate names
-- ("ZIP_BAD_NAME", "ZIP_DUPLICATE"), missing sources ("ENOENT"), write errors.
-- The archive appears atomically (temp file + rename).
function zip.create(path, entries, opts)
  if type(path) ~= "string" then
    error("bad argument #1 to 'create' (string expected, got " .. type(path) .. ")", 2)
  end
  if type(entries) ~= "table" then
    error("bad argument #2 to 'create' (table expected, got " .. type(entries) .. ")", 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error("bad argument #3 to 'create' (table expected, got " .. type(opts) .. ")", 2)
  end
  local level = opts.level or 1
  if math.type(level) ~= "integer" or level < 1 or level > 9 then
    error("bad argument #3 to 'create' (level must be an integer 1..9)", 2)
  end
  local method = opts.method or "deflate"
  if method ~= "deflate" and method ~= "store" then
    error("bad argument #3 to 'create' (method must be \"deflate\" or \"store\")", 2)
  end
  local norm = {}
  for i = 1, #entries do
    local e = entries[i]
    if type(e) ~= "table" then
      error(("bad argument #2 to 'create' (entry #%d is not a table)"):format(i), 2)
    end
    norm[i] = { name = e.name, path = e.path, data = e.data, exec = is_exec(e.mode, i) }
  end
  return core.create(path, norm, level, method)
end

-- zip.open(path) -> Archive | nil, msg, code ("ENOENT", "ZIP_ER_NOZIP", ...)
-- Archive methods: list() -> {{name, size, compressed_size, crc, mode,
-- is_dir, is_symlink}...}; read(name [, opts]) -> bytes | nil, msg,
-- "ZIP_ER_NOENT"; extract(dir [, opts]) -> true | nil, msg, code
-- ("ZIP_UNSAFE" for zip-slip, "ZIP_LIMIT" for a bomb);
-- close() (idempotent; also <close>). The handle is tracked by the ledger.
zip.open = core.open

-- zip.extract(archive_path, dir [, opts]) -> true | nil, msg, code: open,
-- extract (opts: max_size, max_ratio), close.
function zip.extract(archive_path, dir, opts)
  local a <close>, msg, code = core.open(archive_path)
  if not a then return nil, msg, code end
  return a:extract(dir, opts)
end

return zip
