-- geneva.cli: the subcommands of the geneva executable. Each command is a
-- module geneva.cli.<name> exporting main(args) -> exit code.
local cli = {}

local commands = {
  worker = "geneva.cli.worker", cluster = "geneva.cli.cluster",
  manifest = "geneva.cli.manifest", jobs = "geneva.cli.jobs",
  recipe = "geneva.cli.recipe", reap = "geneva.cli.reap",
}

function cli.main(name, ...)
  local modname = commands[name]
  local ok, mod = pcall(require, modname)
  if not ok then
    io.stderr:write(("geneva: command '%s' is not available in this build\n"):format(name))
    return 2
  end
  return mod.main({ ... }) or 0
end

return cli
