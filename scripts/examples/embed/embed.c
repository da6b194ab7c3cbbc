/*
** embed.c: a C application embedding Geneva for Lua through libgeneva.
**
** Build against an installed geneva:
**   cc embed.c $(pkg-config --cflags --libs geneva) -o embed
** Run:
**   ./embed                       greets from Lua, prints geneva's version
**   ./embed --demo DB_DIR         a table, a backfill inside a local context
**                                 and an async backfill, in DB_DIR
**   ./embed script.lua [args...]  runs a script
**
** The embedder keeps its own signal handlers (handle_signals = 0), gets the
** Lua state to register its own functions, and frees the host, which tears
** down every resource the scripts created. Backfill workers are `geneva`
** processes (the one installed beside libgeneva), never copies of this
** program: set opts.worker_exe (or GENEVA_WORKER_EXE) to choose another.
** With EMBED_START_LOG=FILE the program appends a line to FILE each time
** it starts, which lets a test prove exactly that.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <geneva.h>
#include <lauxlib.h>

/* A function of the application, callable from Lua as app.greet(name). */
static int app_greet(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_pushfstring(L, "hello, %s, from the embedding application", name);
  return 1;
}

static const char greeting[] =
  "local geneva = require 'geneva'\n"
  "print(app.greet('geneva'))\n"
  "print(geneva._VERSION)\n";

/* The demo: the columns record which program computed them, so the output
** shows that workers are geneva, not this application. */
static const char demo[] =
  "local geneva = require 'geneva'\n"
  "local db = geneva.connect(app.db_dir)\n"
  "for _, name in ipairs(db:table_names()) do\n"
  "  if name == 'docs' then db:drop_table('docs') end\n"
  "end\n"
  "local rows = {}\n"
  "for i = 1, 3000 do rows[i] = { id = i, content = ('lorem ipsum '):rep(i % 5 + 1) } end\n"
  "local tbl = db:create_table('docs', rows, { schema = {\n"
  "  { name = 'id', data_type = 'int64' }, { name = 'content', data_type = 'string' } } })\n"
  "local function exe(id) return require('geneva.proc').self().exe end\n"
  "tbl:add_columns {\n"
  "  words = geneva.udf { data_type = 'int64',\n"
  "    fn = function(content) return select(2, content:gsub('%S+', '')) end },\n"
  "  context_worker = geneva.udf { data_type = 'string', fn = exe },\n"
  "  async_worker = geneva.udf { data_type = 'string', fn = exe },\n"
  "}\n"
  "-- 1. backfills inside a local context: two workers, gone at its exit\n"
  "geneva.local_cluster { workers = 2 } (function()\n"
  "  local r = tbl:backfill('words', { batch_size = 500 })\n"
  "  print(('words: %d rows computed in a local context'):format(r.rows.computed))\n"
  "  tbl:backfill('context_worker', { batch_size = 500 })\n"
  "end)\n"
  "-- 2. an async backfill on the embedded local cluster\n"
  "local job = tbl:backfill_async('async_worker', { batch_size = 500 })\n"
  "local rec = job:wait()\n"
  "print(('async_worker: %d rows computed by async job %s, %s'):format(\n"
  "  rec.rows.computed, job.id, job:status()))\n"
  "for _, col in ipairs { 'context_worker', 'async_worker' } do\n"
  "  local seen, list = {}, {}\n"
  "  for _, row in ipairs(tbl:to_rows { columns = { col } }) do\n"
  "    local v = row[col] or 'nil'\n"
  "    if not seen[v] then seen[v] = true; list[#list + 1] = v end\n"
  "  end\n"
  "  print(col .. ' ran in: ' .. table.concat(list, ' '))\n"
  "end\n"
  "print('words of row 1: ' .. tbl:to_rows { columns = { 'words' }, where = 'id = 1' }[1].words)\n";

static void log_start(void) {
  const char *path = getenv("EMBED_START_LOG");
  FILE *f;
  if (!path || !*path) return;
  f = fopen(path, "a");
  if (!f) return;
  fprintf(f, "embed started, pid %ld\n", (long)getpid());
  fclose(f);
}

int main(int argc, char **argv) {
  geneva_host_opts opts = {0};
  geneva_host *h;
  lua_State *L;
  int code;
  log_start();
  h = geneva_host_new(&opts);
  if (!h) {
    fprintf(stderr, "embed: cannot create a geneva host\n");
    return 1;
  }
  L = geneva_host_lua(h);
  lua_newtable(L);
  lua_pushcfunction(L, app_greet);
  lua_setfield(L, -2, "greet");
  lua_setglobal(L, "app");

  if (argc > 2 && strcmp(argv[1], "--demo") == 0) {
    lua_getglobal(L, "app");
    lua_pushstring(L, argv[2]);
    lua_setfield(L, -2, "db_dir");
    lua_pop(L, 1);
    code = geneva_host_dostring(h, demo);
  } else if (argc > 1) {
    code = geneva_host_dofile(h, argv[1], argc - 2, (const char *const *)argv + 2);
  } else {
    code = geneva_host_dostring(h, greeting);
  }
  if (code != 0 && geneva_host_error(h))
    fprintf(stderr, "embed: %s\n", geneva_host_error(h));
  geneva_host_free(h);
  return code;
}
