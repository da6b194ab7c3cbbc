-- geneva.progress: whether progress bars are drawn (the backfill's and
-- ingest's), and the bar an ingest of a file draws on stderr. Bars show
-- when stderr is a terminal; GENEVA_PROGRESS=0 (geneva --no-progress)
-- turns them off, GENEVA_PROGRESS=1 draws them even when it is not (a log
-- that keeps \r). An ingest's bar waits a moment before its first draw, so
-- quick ones stay silent (with GENEVA_PROGRESS=1 it draws from the start).
local fs = require "geneva.fs"
local time = require "geneva.time"

local progress = {}

progress.DELAY = 0.5      -- seconds before the first draw
progress.EVERY = 0.1      -- seconds between draws

local Bar = {}
Bar.__index = Bar

-- progress.enabled() -> boolean: whether bars are drawn here
function progress.enabled()
  local env = os.getenv("GENEVA_PROGRESS")
  if env == "0" then return false end
  if env == "1" then return true end
  return fs.isatty(2)
end

local function mb(n) return ("%.1f"):format(n / 1e6) end

-- progress.rate(n) -> "1.3M", "120k", "950": a count per second, short
function progress.rate(n)
  if n >= 1e6 then return ("%.1fM"):format(n / 1e6) end
  if n >= 1e4 then return ("%.0fk"):format(n / 1e3) end
  return ("%.0f"):format(n)
end

-- progress.duration(s) -> "1h02m", "3m05s", "42s"
function progress.duration(s)
  s = math.max(0, math.floor(s + 0.5))
  if s >= 3600 then return ("%dh%02dm"):format(s // 3600, s % 3600 // 60) end
  if s >= 60 then return ("%dm%02ds"):format(s // 60, s % 60) end
  return ("%ds"):format(s)
end

-- progress.draw(label, frac, detail): the one shape of every bar, redrawn
-- in place on stderr:  label [#########...............]  37%  detail
function progress.draw(label, frac, detail)
  frac = math.max(0, math.min(1, frac))
  local width = 24
  local fill = math.floor(width * frac)
  io.stderr:write(("\r%s [%s%s] %3d%%  %s\27[K"):format(label, ("#"):rep(fill), ("."):rep(width - fill),
    math.floor(frac * 100), detail))
end

-- progress.bar(label, total_bytes) -> Bar (a no-op when bars are off).
-- bar:update(done_bytes, rows) redraws at most every EVERY seconds;
-- bar:finish() draws the last state and ends the line (if anything was
-- drawn). Idempotent.
function progress.bar(label, total)
  local on = progress.enabled()
  local forced = os.getenv("GENEVA_PROGRESS") == "1"
  local now = time.monotonic()
  return setmetatable({ label = label, total = total, on = on, t0 = now,
                        next_at = now + (forced and 0 or progress.DELAY), drawn = false,
                        done = 0, rows = 0 }, Bar)
end

function Bar:draw()
  local el = math.max(time.monotonic() - self.t0, 1e-6)
  local frac = (self.total and self.total > 0) and self.done / self.total or 0
  progress.draw(self.label, frac, ("%s/%s MB  %d rows  %s rows/s"):format(mb(self.done), mb(self.total or 0),
    self.rows, progress.rate(self.rows / el)))
  self.drawn = true
end

function Bar:update(done, rows)
  if not self.on then return end
  self.done, self.rows = done, rows
  local now = time.monotonic()
  if now < self.next_at then return end
  self.next_at = now + progress.EVERY
  self:draw()
end

function Bar:finish()
  if not self.on or self.finished then return end
  self.finished = true
  if self.drawn or os.getenv("GENEVA_PROGRESS") == "1" then
    self:draw()
    io.stderr:write("\n")
  end
end

return progress
