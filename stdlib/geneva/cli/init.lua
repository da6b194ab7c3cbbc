-- geneva.cli: the subcommands of the geneva executable. Each command is a
-- module geneva.cli.<name> exporting main(args) -> exit code; the list of
-- commands is host/main.c's (it decides what is a command).
local cli = {}

function cli.main(name, ...)
  local ok, mod = false, nil
  if type(name) == "string" and name:match("^%l+$") then ok, mod = pcall(require, "geneva.cli." .. name) end
  if not ok then
    io.stderr:write(("geneva: command '%s' is not available in this build\n"):format(name))
    return 2
  end
  return mod.main({ ... }) or 0
end

return cli
