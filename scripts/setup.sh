#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine: Debian packages, build (-Werror), the
# Lua API reference (LDoc), install to /usr/local (or $PREFIX), then runs
# the main example.
#   bash scripts/setup.sh            # BUILD_DIR=build PREFIX=/usr/local
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PREFIX=${PREFIX:-/usr/local}
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

PACKAGES=(
  build-essential cmake pkg-config
  liblua5.4-dev lua5.4 lua-cjson lua-cjson-dev lua-busted
  libcurl4-openssl-dev libzip-dev libyaml-dev libsqlite3-dev sqlite3
  libssl-dev openssl libedit-dev
  python3 zip unzip valgrind procps
  man-db groff-base bsdextrautils            # tests/integration/manpage.sh
  lua-ldoc lua-markdown                      # the API reference (scripts/docs)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
# the API reference, before the install that copies it to share/doc/geneva
# (which man geneva names); any LDoc warning fails it
cmake --build "$BUILD_DIR" --target docs >/dev/null
$SUDO cmake --install "$BUILD_DIR" --prefix "$PREFIX" >/dev/null
command -v ldconfig >/dev/null && $SUDO ldconfig || true

echo "== running scripts/examples/main.lua with $PREFIX/bin/geneva"
"$PREFIX/bin/geneva" scripts/examples/main.lua
