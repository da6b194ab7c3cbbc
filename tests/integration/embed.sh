#!/usr/bin/env bash
# Installs the build into a temp prefix, builds the embedding example against
# the *installed* files (pkg-config, and the CMake package), and runs it:
# scripts, errors, teardown, and a backfill in a local context plus an async
# job whose workers must be the installed geneva, never the application
# (README, Embedding), with GENEVA_WORKER_EXE and with no geneva to be found.
set -euo pipefail
: "${GENEVA_BUILD_DIR:?}" "${GENEVA_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$GENEVA_BUILD_DIR" --prefix "$tmp/prefix" >/dev/null
prefix=$tmp/prefix
libdir=$(ls -d "$prefix"/lib*/ | head -n1)
export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir
extra=()
[ "${GENEVA_SANITIZE:-0}" = 1 ] && extra=(-fsanitize=address,undefined)
src=$GENEVA_SOURCE_DIR/scripts/examples/embed

# 1. pkg-config
cc -std=c11 -Wall -Wextra -Werror "${extra[@]}" "$src/embed.c" \
  $(pkg-config --cflags --libs geneva) -o "$tmp/embed"
out=$("$tmp/embed")
grep -q "hello, geneva, from the embedding application" <<<"$out"
grep -q "^geneva 0" <<<"$out"

# 2. a script with arguments, an error and its exit code, and teardown at free
cat >"$tmp/job.lua" <<'LUA'
local ledger = require "geneva.ledger"
ledger.current():reserve("file", "marker"):bind(function()
  local f = assert(io.open(arg[1], "w")); f:write("done"); f:close()
end)
assert(select("#", ...) == 2 and arg[2] == "two")
error("deliberate")
LUA
set +e
"$tmp/embed" "$tmp/job.lua" "$tmp/marker" two 2>"$tmp/err"
rc=$?
set -e
[ "$rc" = 1 ] || { echo "expected exit 1, got $rc"; cat "$tmp/err"; exit 1; }
grep -q "deliberate" "$tmp/err"
grep -q "stack traceback" "$tmp/err"
[ "$(cat "$tmp/marker")" = done ]

# 3. a real backfill in a local context and an async job, from the
#    application: the workers are the installed geneva, and the
#    application's main ran exactly once (workers never run its code)
geneva_real=$(readlink -f "$prefix/bin/geneva")
log=$tmp/starts
out=$(cd "$tmp" && env -u GENEVA_WORKER_EXE EMBED_START_LOG="$log" "$tmp/embed" --demo "$tmp/db" 2>&1) ||
  { echo "demo failed: $out"; exit 1; }
grep -q "^words: 3000 rows computed in a local context" <<<"$out" || { echo "$out"; exit 1; }
grep -q "^async_worker: 3000 rows computed by async job .*, DONE" <<<"$out" || { echo "$out"; exit 1; }
grep -qxF "context_worker ran in: $geneva_real" <<<"$out" || { echo "context workers were not geneva: $out"; exit 1; }
grep -qxF "async_worker ran in: $geneva_real" <<<"$out" || { echo "async workers were not geneva: $out"; exit 1; }
grep -qx "words of row 1: 4" <<<"$out" || { echo "$out"; exit 1; }
[ "$(wc -l <"$log")" = 1 ] || { echo "the application started $(wc -l <"$log") times:"; cat "$log"; exit 1; }

# 4. GENEVA_WORKER_EXE overrides the program (a wrapper that logs, then
#    runs geneva): every worker went through it, the application still once
cat >"$tmp/wrapper" <<SH
#!/bin/sh
echo "\$*" >>"$tmp/wrapped"
exec "$prefix/bin/geneva" "\$@"
SH
chmod +x "$tmp/wrapper"
rm -f "$log"
out=$(cd "$tmp" && GENEVA_WORKER_EXE="$tmp/wrapper" EMBED_START_LOG="$log" "$tmp/embed" --demo "$tmp/db" 2>&1) ||
  { echo "demo with GENEVA_WORKER_EXE failed: $out"; exit 1; }
grep -qxF "async_worker ran in: $geneva_real" <<<"$out" || { echo "$out"; exit 1; }
[ "$(grep -c '^worker --stdio$' "$tmp/wrapped")" -ge 2 ] || { echo "wrapper not used:"; cat "$tmp/wrapped"; exit 1; }
[ "$(wc -l <"$log")" = 1 ] || { echo "the application started $(wc -l <"$log") times"; exit 1; }

# 5. no geneva anywhere (libgeneva alone in a directory, an empty PATH, no
#    override): a clear error that says how to set it, and still one start
mkdir -p "$tmp/lonely/lib"
cp -P "$libdir"/libgeneva.so* "$tmp/lonely/lib/"
rm -f "$log"
set +e
out=$(cd "$tmp" && env -u GENEVA_WORKER_EXE PATH= LD_LIBRARY_PATH="$tmp/lonely/lib" \
      EMBED_START_LOG="$log" "$tmp/embed" --demo "$tmp/db" 2>&1)
rc=$?
set -e
[ "$rc" = 1 ] || { echo "expected exit 1 without any geneva, got $rc: $out"; exit 1; }
grep -q "unavailable: cannot start workers: cannot find the geneva program to run as a worker" <<<"$out" ||
  { echo "unclear error: $out"; exit 1; }
grep -q "not beside libgeneva ($tmp/lonely/lib/" <<<"$out" || { echo "$out"; exit 1; }
grep -q "set geneva_host_opts.worker_exe, or the GENEVA_WORKER_EXE environment variable" <<<"$out" ||
  { echo "$out"; exit 1; }
[ "$(wc -l <"$log")" = 1 ] || { echo "the application started $(wc -l <"$log") times"; exit 1; }
out=$(cd "$tmp" && env -u GENEVA_WORKER_EXE PATH= LD_LIBRARY_PATH="$tmp/lonely/lib" \
      "$tmp/embed" <(echo 'print(require("geneva.host.core").worker_exe())') 2>&1)
grep -q "^nil	cannot find the geneva program" <<<"$out" || { echo "$out"; exit 1; }

# 6. the installed binary runs without the source tree
out=$(cd "$tmp" && env -u GENEVA_STDLIB "$prefix/bin/geneva" -e 'print(require("geneva.pretty").format({1}))')
grep -qx '{1}' <<<"$out"

# 7. the CMake package
if [ "${GENEVA_SANITIZE:-0}" != 1 ]; then
  cmake -S "$src" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build "$tmp/cm" >/dev/null
  out=$("$tmp/cm/embed")
  grep -q "hello, geneva" <<<"$out"
fi
echo "1 passed, 0 failed"
