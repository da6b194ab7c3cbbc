-- geneva.cli: the subcommands of the geneva executable. Each command is a
-- module geneva.cli.<name> exporting main(args) -> exit code; the list of
-- commands is host/main.c's (it decides what is a command).
local cli = {}

function cli.main(name, ...)
  local ok, mod = false, nil
  if type(name) == "string" and name:match("^%l+$") then ok, mod = pcall(require, "geneva.cli." .. name) end
  if not ok then
    -- a module that exists but fails to load is a bug of ours: say which
    local missing = type(mod) == "string" and mod:match("module 'geneva%.cli%.%l+' not found")
    if not missing and type(name) == "string" and name:match("^%l+$") then
      io.stderr:write(("geneva: internal: command '%s' failed to load: %s\n"):format(name, tostring(mod)))
      return 1
    end
    io.stderr:write(("geneva: command '%s' is not available in this build\n"):format(name))
    return 2
  end
  return mod.main({ ... }) or 0
end

return cli
