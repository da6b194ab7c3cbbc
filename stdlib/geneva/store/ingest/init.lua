--[[
geneva.store.ingest: input rows into fragment data files, for
db:create_table and tbl:add (docs/internals.md, "Ingest").

Input is Lua rows ({col = value}, NULL as nil, geneva.null or sqlite.null),
a CSV file (RFC 4180, header row; geneva.store.ingest.csv) or a JSONL file
(one object per line; geneva.store.ingest.jsonl). Files stream: a chunk of
rows at a time is read, checked and written (common.CHUNK_ROWS, fewer for
wide or long rows), so memory stays bounded by a chunk and the fragment
file being written, whatever the file's size. The files written are
referenced by no version until the caller commits them all in one version;
any error removes them, so bad input leaves the table as it was.

A Source (ingest.open) gives its rows chunk by chunk:
  src:plan(given) -> schema    a new table's columns: given (normalize_schema
                               output) first, then the input's (CSV header or
                               JSONL first-seen order; Lua rows: sorted), the
                               types not given inferred from the first chunk
  src:bind(schema)             or: the columns of an existing table
  src:next(max_rows) -> chunk | nil    (geneva.store.ingest.writer's chunks)
  src:position() -> bytes read, file size | nil    src.names: the columns
  src:close() (also <close>)            a chunk fills, in order
Errors are geneva.Error invalid_argument, with `path` and `line` for files
("file.csv:LINE: ...") or `row` for Lua rows, and `column`.
]]
local errors = require "geneva.errors"
local common = require "geneva.store.ingest.common"
local progress = require "geneva.progress"

local ingest = {}

ingest.DEFAULT_FRAGMENT_SIZE = 100000
ingest.MAX_COLUMNS = common.MAX_COLUMNS
ingest.check_name = common.check_name
ingest.normalize_schema = common.normalize_schema
ingest.writer = require("geneva.store.ingest.writer").new

-- ingest.open(rows | {from = "x.csv"|"x.jsonl" [, format = "csv"|"jsonl"]}) -> Source
function ingest.open(source)
  if type(source) == "table" and source.from ~= nil then
    require("geneva.suggest").check_options("file source", source, { "from", "format" })
    local path = source.from
    if type(path) ~= "string" then errors.throw("invalid_argument", "from must be a file path") end
    local fmt = source.format or path:match("%.(%w+)$")
    fmt = type(fmt) == "string" and fmt:lower()
    if fmt == "csv" then return require("geneva.store.ingest.csv").open(path) end
    if fmt == "jsonl" or fmt == "ndjson" then return require("geneva.store.ingest.jsonl").open(path) end
    errors.throw("invalid_argument", ("cannot tell the format of '%s' (use .csv or .jsonl, or format=)"):format(path),
      { path = path })
  end
  return require("geneva.store.ingest.values").open_rows(source)
end

--[[
ingest.copy(src, w) -> rows: every chunk of src (planned or bound) through
writer w, with a progress bar on stderr for files (geneva.progress: on a
terminal; GENEVA_PROGRESS=0 turns it off). Raises what they raise; the
caller aborts w then.
]]
function ingest.copy(src, w)
  local _, total = src:position()
  local bar = src.path and progress.bar(src.path:match("[^/]*$"), total)
  local ok, err = pcall(function()
    while true do
      local chunk = src:next(w:room())
      if not chunk then break end
      w:add(chunk)
      if bar then bar:update(src:position(), w.rows) end
    end
  end)
  if bar then bar:finish() end
  if not ok then error(err, 0) end
  return w.rows
end

return ingest
