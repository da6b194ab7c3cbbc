#!/usr/bin/env bash
# Installs the build into a temp prefix, builds the embedding example against
# the *installed* files (pkg-config, and the CMake package), and runs it.
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

# 3. the installed binary runs without the source tree
out=$(cd "$tmp" && env -u GENEVA_STDLIB "$prefix/bin/geneva" -e 'print(require("geneva.pretty").format({1}))')
grep -q '1,' <<<"$out"

# 4. the CMake package
if [ "${GENEVA_SANITIZE:-0}" != 1 ]; then
  cmake -S "$src" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build "$tmp/cm" >/dev/null
  out=$("$tmp/cm/embed")
  grep -q "hello, geneva" <<<"$out"
fi
echo "1 passed, 0 failed"
