-- geneva.context.registry: named JSON records under <db>/_geneva/<kind>/<name>.json
-- (clusters, manifests). Writes are atomic (temp file, fsync, rename) and
-- skipped when the stored bytes would not change, so re-defining an
-- unchanged object writes nothing. A record holding a literal env value is
-- written 0600 (M.private): secrets are refused by name, but a value under
-- a name no rule knows may still be one. Records of references and
-- structure only keep the default mode, so a team sharing a db can read
-- each other's definitions. Errors are raised geneva.Errors.
local fs = require "geneva.fs"
local backend = require "geneva.store.backend"
local json = require "geneva.json"
local errors = require "geneva.errors"
local show = require("geneva.context.spec").show

local M = {}

-- M.check_name(kind, name) -> name | raises invalid_argument. Names become
-- file names: letters, digits, '_', '-', '.', starting with a letter or
-- digit, at most 128 bytes.
function M.check_name(kind, name)
  if type(name) ~= "string" or #name > 128 or not name:match("^[%w][%w_.%-]*$") then
    errors.throw("invalid_argument", ("invalid %s name %s (letters, digits, '_', '-' and '.', starting with a letter or digit, at most 128 bytes)")
      :format(kind, type(name) == "string" and ("'" .. name .. "'") or tostring(name)))
  end
  return name
end

local io_check = errors.io

-- M.dir(db, kind) -> "<db>/_geneva/<kind>" (not created)
function M.dir(db, kind) return db.path .. "/_geneva/" .. kind end

-- M.path(db, kind, name) -> path of the record file
function M.path(db, kind, name) return M.dir(db, kind) .. "/" .. name .. ".json" end

-- M.encode(rec) -> the bytes stored for a record (sorted keys, indented)
function M.encode(rec) return json.encode(rec, { indent = 2, sort_keys = true }) .. "\n" end

-- M.read(db, kind, name) -> record, bytes | nil (absent) | raises
-- unavailable/internal for unreadable or corrupt files.
function M.read(db, kind, name)
  local path = M.path(db, kind, name)
  local data, msg, code = backend.get(path)
  if not data then
    if code == "ENOENT" then return nil end
    io_check(nil, msg, code)
  end
  local rec, err = json.decode(data)
  if type(rec) ~= "table" then
    errors.throw("internal", ("corrupt %s record %s: %s"):format(kind, path, tostring(err or "not an object")), { path = path })
  end
  return rec, data
end

-- M.private(v) -> boolean: v holds, at any depth, an `env` table with a
-- literal value (a reference {from_env=...} is a table)
function M.private(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if k == "env" and type(x) == "table" then
      for _, e in pairs(x) do if type(e) ~= "table" then return true end end
    end
    if M.private(x) then return true end
  end
  return false
end

local MODE_PRIVATE = 384   -- 0600

-- M.write(db, kind, name, rec [, old_bytes]) -> true if written, false when
-- the bytes are unchanged (old_bytes: what M.read returned)
function M.write(db, kind, name, rec, old_bytes)
  local data = M.encode(rec)
  if data == old_bytes then return false end
  io_check(fs.mkdir_p(M.dir(db, kind)))
  io_check(backend.put(M.path(db, kind, name), data, { mode = M.private(rec) and MODE_PRIVATE or nil }))
  return true
end

-- M.names(db, kind) -> sorted array of record names
function M.names(db, kind)
  local list = io_check(backend.list(M.dir(db, kind)))
  local out = {}
  for _, f in ipairs(list) do
    local n = f:match("^(.+)%.json$")
    if n and n:match("^[%w][%w_.%-]*$") then out[#out + 1] = n end
  end
  return out
end

-- M.remove(db, kind, name) -> true | raises not_found
function M.remove(db, kind, name)
  local path = M.path(db, kind, name)
  if not backend.exists(path) then
    errors.throw("not_found", ("%s '%s' is not defined in %s"):format(kind:gsub("s$", ""), name, db.uri or db.path))
  end
  io_check(backend.delete(path))
  backend.sync_dir(M.dir(db, kind))
  return true
end

-- {===== what the kinds' modules (context.cluster, context.manifest) share;
-- kind is the directory ("clusters"), names in messages are singular

-- M.find(db, kind, name) -> record | nil, Error(not_found). A probe: never
-- raises for an unknown (or invalid) name; raises for unreadable records.
function M.find(db, kind, name)
  local what = kind:gsub("s$", "")
  if type(name) ~= "string" or not pcall(M.check_name, what, name) then
    return nil, errors.new("not_found", ("%s %s is not defined"):format(what, show(name)))
  end
  local rec = M.read(db, kind, name)
  if not rec then
    return nil, errors.new("not_found", ("%s '%s' is not defined in %s"):format(what, name, db.path))
  end
  return rec
end

-- M.list(db, kind) -> records, names: the readable records, sorted by name
function M.list(db, kind)
  local recs, names = {}, {}
  for _, n in ipairs(M.names(db, kind)) do
    local rec = M.read(db, kind, n)
    if rec then recs[#recs + 1], names[#names + 1] = rec, n end
  end
  return recs, names
end

-- M.delete(db, kind, name) -> true | raises invalid_argument (a bad name),
-- not_found
function M.delete(db, kind, name)
  M.check_name((kind:gsub("s$", "")), name)
  return M.remove(db, kind, name)
end

-- }=====

return M
