#!/usr/bin/env bash
# scripts/setup.sh, the README's first command, installs the API reference
# that the man page's SEE ALSO points at (share/doc/geneva/api): it installs
# lua-ldoc and lua-markdown with the other packages and builds the `docs`
# target before `cmake --install`, whose install(DIRECTORY ... OPTIONAL)
# otherwise installs nothing. Part 1 runs setup.sh with apt-get, dpkg-query,
# sudo, cmake and ldconfig stubbed (every package missing), recording what
# it runs: CI's stage 1 runs it for real. Part 2 builds the reference and
# installs the build into a temp prefix, where the man page says it is.
set -euo pipefail
: "${GENEVA_BUILD_DIR:?}" "${GENEVA_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/prefix/bin"
log=$tmp/log
stub() {   # stub PATH [BODY]: logs its name and arguments, then runs BODY
  printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "${1##*/}" "$log" "${2:-exit 0}" >"$1"
  chmod +x "$1"
}
stub "$tmp/bin/dpkg-query" 'exit 1'
stub "$tmp/bin/apt-get"
stub "$tmp/bin/sudo" 'exec "$@"'
stub "$tmp/bin/cmake"
stub "$tmp/bin/ldconfig"
stub "$tmp/prefix/bin/geneva"
PATH="$tmp/bin:$PATH" PREFIX="$tmp/prefix" BUILD_DIR="$tmp/build" \
  bash "$GENEVA_SOURCE_DIR/scripts/setup.sh" >"$tmp/out" 2>&1 || { cat "$tmp/out"; exit 1; }
fail() { echo "$1"; echo "--- what setup.sh ran:"; cat "$log"; exit 1; }
install=$(grep '^apt-get .*install' "$log") || fail "setup.sh installed no packages"
for p in lua-ldoc lua-markdown; do
  grep -qw -- "$p" <<<"$install" || fail "setup.sh does not install $p"
done
line() { grep -n -F -- "$1" "$log" | head -n1 | cut -d: -f1; }
build=$(line "cmake --build $tmp/build -j")
docs=$(line "cmake --build $tmp/build --target docs")
inst=$(line "cmake --install $tmp/build")
[ -n "$build" ] || fail "setup.sh does not build"
[ -n "$docs" ] || fail "setup.sh does not build the docs target"
[ -n "$inst" ] || fail "setup.sh does not install"
[ "$build" -lt "$docs" ] && [ "$docs" -lt "$inst" ] || fail "expected build, then docs, then install"
grep -q "^geneva scripts/examples/main.lua" "$log" || fail "setup.sh does not run the main example"

# Part 2: the reference built as setup.sh builds it lands where geneva(1) says
command -v ldoc >/dev/null || { echo "ldoc missing: scripts/setup.sh installs lua-ldoc"; exit 1; }
cmake --build "$GENEVA_BUILD_DIR" --target docs >"$tmp/docs.out" 2>&1 || { cat "$tmp/docs.out"; exit 1; }
cmake --install "$GENEVA_BUILD_DIR" --prefix "$tmp/real" >/dev/null
said=$(sed -n '/^\.SH SEE ALSO/,$p' "$GENEVA_SOURCE_DIR/docs/geneva.1" | grep -o 'share/doc/geneva/[^ ]*' | head -n1)
[ -n "$said" ] || { echo "geneva.1's SEE ALSO names no share/doc/geneva path"; exit 1; }
[ -f "$tmp/real/$said" ] || { echo "installed no $said"; exit 1; }
echo "ok: setup.sh installs ldoc and builds the docs before installing; $said installed"
