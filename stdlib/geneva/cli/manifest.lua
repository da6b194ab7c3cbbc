-- geneva manifest list|show NAME|delete NAME --db URI [-o json|yaml|wide | --json]
local json = require "geneva.json"
local registry_cmd = require "geneva.cli.registry_cmd"
local manifest = require "geneva.context.manifest"
local output = require "geneva.cli.output"

local M = {}

local usage = registry_cmd.usage("manifest", [[
Lists the manifests defined in a database, shows one (checksum, size and
the packaged files; --json gives the whole record), or deletes its record
(the content-addressed package stays: other manifests may share it).
-o wide adds MODULES, CONTENT (unpacked size), HOST (ship_host) and UPDATED.
Exit codes: 0 ok, 1 failure (unknown name, no database), 2 bad syntax.
]])

local function mib(n) return ("%.1f MiB"):format((n or 0) / 1048576) end

local impl = {
  list = function(db)
    local out = {}
    for i, rec in ipairs(manifest.list(db)) do
      rec.files = nil   -- list is a summary: `show` has the files
      out[i] = rec
    end
    return out
  end,
  get = manifest.get,
  delete = manifest.delete,
  headers = { "NAME", "CHECKSUM", "FILES", "SIZE", "AGE" },
  wide_headers = { "MODULES", "CONTENT", "HOST", "UPDATED" },
  wide_row = function(rec)
    local spec = rec.spec or {}
    return { tostring(#(spec.modules or {})), mib(rec.content_size), spec.ship_host and "yes" or "no",
             rec.updated_at or "-" }
  end,
  row = function(rec)
    return { rec.name, (rec.checksum or "?"):sub(1, 12), tostring(rec.file_count or 0), mib(rec.size),
             output.age(rec.updated_at) }
  end,
  show = function(rec)
    local lines = {
      ("manifest %s"):format(rec.name),
      ("checksum %s"):format(rec.checksum),
      ("package  %s (%s zipped, %s of files)"):format(rec.package or "?", mib(rec.size), mib(rec.content_size)),
      ("created %s, updated %s"):format(rec.created_at or "?", rec.updated_at or "?"),
    }
    if rec.host then
      lines[#lines + 1] = ("host     %s/%s glibc >= %s, bundles %s"):format(rec.host.os, rec.host.arch,
        rec.host.glibc_min or "?", table.concat(rec.host.bundled or {}, " "))
    end
    if rec.spec and rec.spec.env and next(rec.spec.env) then
      lines[#lines + 1] = "env      "
        .. json.encode(rec.spec.env, { sort_keys = true, invalid_utf8 = "replace" })
    end
    lines[#lines + 1] = ("files (%d):"):format(rec.file_count or #(rec.files or {}))
    for _, f in ipairs(rec.files or {}) do
      lines[#lines + 1] = ("  %10d  %s  %s"):format(f.size, f.sha256:sub(1, 12), f.path)
    end
    return table.concat(lines, "\n") .. "\n"
  end,
}

function M.main(argv)
  return registry_cmd.main(argv, "manifest", usage, impl)
end

return M
