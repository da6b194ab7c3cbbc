#!/usr/bin/env bash
# libgeneva.so exports the functions of geneva.h and the luaopen_* openers,
# nothing else (host/libgeneva.map): every other defined dynamic symbol fails the
# test, and so does a geneva.h function that is not exported.
set -euo pipefail
: "${GENEVA_BUILD_DIR:?}" "${GENEVA_SOURCE_DIR:?}"
lib=$GENEVA_BUILD_DIR/lib/libgeneva.so
[ -e "$lib" ] || { echo "no $lib"; exit 1; }
# the API: every `geneva_xxx(` declared in geneva.h
api=$(grep -oE '\bgeneva_[a-z_]+[[:space:]]*\(' "$GENEVA_SOURCE_DIR/host/geneva.h" |
      tr -d '( \t' | sort -u)
[ -n "$api" ] || { echo "found no functions in geneva.h"; exit 1; }
exported=$(nm -D --defined-only "$lib" | awk 'NF >= 3 {print $3}' | sed 's/@.*//' | sort -u)
bad=0
for sym in $exported; do
  case $sym in
    luaopen_*) continue ;;
  esac
  if ! grep -qxF "$sym" <<<"$api"; then
    echo "exported but not in geneva.h: $sym"
    bad=1
  fi
done
for fn in $api; do
  grep -qxF "$fn" <<<"$exported" || { echo "in geneva.h but not exported: $fn"; bad=1; }
done
[ "$bad" = 0 ] || exit 1
echo "$(wc -w <<<"$exported") exported symbols, all allowed"
echo "1 passed, 0 failed"
