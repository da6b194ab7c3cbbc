--[[
geneva.store.ingest.writer: chunks of rows into fragment data files of
fragment_size rows. Each file is built under a temp name with a fast bulk
load (one transaction, no journal), synced, then published under a fresh
name in data/; no version references it until the caller commits the
list finish() returns. abort() removes every file written so far.
]]
local fs = require "geneva.fs"
local types = require "geneva.store.types"
local storage = require "geneva.store.versions"

local qi = require("geneva.sqlite").quote_ident
local check = storage.check

local W = {}

local Writer = {}
Writer.__index = Writer

--[[
W.new(tbl_dir, schema, names, fragment_size) -> Writer
schema: the table's columns (the stored ones make each file's table);
names: the columns a chunk fills, in its order: chunks are {packed =
rows, n =} (packed rows, host/rowpack.h) or {cols = arrays, n =} (one
array of SQLite-ready values per name).
]]
function W.new(tbl_dir, schema, names, fragment_size)
  local defs, qn, qs = { "_rowid INTEGER PRIMARY KEY" }, {}, {}
  for _, c in ipairs(schema) do
    if not c.virtual then defs[#defs + 1] = qi(c.name) .. " " .. types.parse(c.data_type).sql end
  end
  for j, name in ipairs(names) do
    qn[j], qs[j] = qi(name), "?"
  end
  return setmetatable({
    dir = tbl_dir, fragment_size = fragment_size,
    create = ("CREATE TABLE data(%s)"):format(table.concat(defs, ", ")),
    insert = #names > 0 and ("INSERT INTO data(%s) VALUES (%s)"):format(table.concat(qn, ", "), table.concat(qs, ", "))
      or "INSERT INTO data DEFAULT VALUES",
    rows = 0, in_file = 0, files = {},
  }, Writer)
end

function Writer:open_file()
  self.tmp = storage.temp_data_path(self.dir)
  self.db = storage.open_new_file(self.tmp)
  check(self.db:exec(self.create))
  check(self.db:exec("BEGIN"))
  self.stmt = check(self.db:prepare(self.insert))
  self.in_file = 0
end

-- Ends the current file: committed, synced, then published
function Writer:close_file()
  local db, stmt = self.db, self.stmt
  self.db, self.stmt = nil, nil
  stmt:close()
  local ok, msg, code = db:exec("COMMIT")
  if not ok then
    db:close()
    check(nil, msg, code)
  end
  storage.finish_file(db)
  self.files[#self.files + 1] = { data = storage.publish_file(self.dir, self.tmp, "d"), rows = self.in_file }
  self.tmp = nil
  self.in_file = 0
end

-- w:room() -> rows the current file takes before the next one starts
function Writer:room() return self.fragment_size - self.in_file end

-- w:add(chunk): writes its rows, starting new files as they fill. Raises
-- unavailable (I/O) or interrupted.
function Writer:add(chunk)
  local n, done, pos = chunk.n, 0, 1
  while done < n do
    if not self.db then self:open_file() end
    local k = math.min(n - done, self:room())
    if chunk.packed then
      pos = check(self.stmt:insert_packed(chunk.packed, k, pos))
    else
      local cols = chunk.cols
      if k < n then
        local part = {}
        for j, col in ipairs(cols) do part[j] = table.move(col, done + 1, done + k, 1, {}) end
        cols = part
      end
      check(self.stmt:insert_columns(cols, k))
    end
    done = done + k
    self.in_file = self.in_file + k
    self.rows = self.rows + k
    if self.in_file == self.fragment_size then self:close_file() end
  end
end

-- w:finish() -> array of {data = "data/d-....db", rows =}: the files
-- written, in order
function Writer:finish()
  if self.db then self:close_file() end
  if #self.files > 0 then storage.sync_data_dir(self.dir) end
  return self.files
end

-- w:abort(): removes every file written (best effort; never raises)
function Writer:abort()
  if self.stmt then pcall(self.stmt.close, self.stmt) end
  if self.db then pcall(self.db.close, self.db) end
  self.stmt, self.db = nil, nil
  if self.tmp then fs.remove(self.tmp) end
  local rels = {}
  for i, f in ipairs(self.files) do rels[i] = f.data end
  pcall(storage.remove_files, self.dir, rels)
  self.files = {}
end

return W
