#!/usr/bin/env bash
# docs/geneva.1 (issue 12): installed where `man geneva` finds it, renders
# without groff warnings, names every command host/main.c knows, s3://
# databases and every environment variable the code reads.
set -euo pipefail
: "${GENEVA_BUILD_DIR:?}" "${GENEVA_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$GENEVA_BUILD_DIR" --prefix "$tmp/prefix" >/dev/null
page=$tmp/prefix/share/man/man1/geneva.1
[ -f "$page" ] || { echo "not installed: share/man/man1/geneva.1"; exit 1; }
warnings=$(groff -man -ww -z "$page" 2>&1)
[ -z "$warnings" ] || { echo "groff warnings:"; echo "$warnings"; exit 1; }
text=$(MANWIDTH=200 MANPATH="$tmp/prefix/share/man" man geneva 2>/dev/null | col -b)
grep -q "^NAME" <<<"$text" || { echo "man geneva did not find the page"; exit 1; }
# the commands, from the one list in host/main.c
commands=$(sed -n '/commands\[\] = {/,/};/p' "$GENEVA_SOURCE_DIR/host/main.c" | grep -o '"[a-z]*"' | tr -d '"')
[ -n "$commands" ] || { echo "no commands found in host/main.c"; exit 1; }
for c in $commands; do
  grep -qE "^ +$c( |$)" <<<"$text" || { echo "the man page does not describe '$c'"; exit 1; }
done
# and the actions of geneva jobs, from its usage
for verb in $(GENEVA_TRACE= "$GENEVA_BIN" jobs --help | sed -n 's/^.*geneva jobs \([a-z]*\) .*$/\1/p'); do
  grep -qE "^ +jobs $verb " <<<"$text" || { echo "the man page does not describe 'jobs $verb'"; exit 1; }
done
# --db takes s3:// URIs, and ENVIRONMENT names every variable the code reads
# (getenv/env("NAME") in host/, bindings/, stdlib/) but those of the worker
# protocol, of tests, and the ones every program shares
grep -q -- "--db URI names a database as geneva.connect does: .*s3://bucket/prefix" <<<"$(tr -s ' \n' ' ' <<<"$text")" ||
  { echo "the man page's --db does not say it takes s3:// URIs"; exit 1; }
env_section=$(sed -n '/^ENVIRONMENT/,/^[A-Z]/p' <<<"$text")
internal='^(GENEVA_BEAT_.*|GENEVA_HEARTBEAT|GENEVA_GC_STRESS|GENEVA_KUBE_SA_DIR|HOME|PATH|TMPDIR|LUA_PATH|KUBERNETES_SERVICE_.*)$'
vars=$(cd "$GENEVA_SOURCE_DIR" && grep -rhoE '(getenv|env)\("[A-Z][A-Z0-9_]+"\)' host bindings stdlib |
  sed -E 's/.*\("([A-Z0-9_]+)"\)/\1/' | sort -u | grep -vE "$internal")
[ "$(wc -l <<<"$vars")" -ge 20 ] || { echo "found too few variables in the code: $vars"; exit 1; }
for v in $vars; do
  grep -qE "^ +$v\$" <<<"$env_section" || { echo "ENVIRONMENT does not describe $v"; exit 1; }
done
echo "ok: $(wc -l <<<"$text") lines, $(wc -l <<<"$vars") variables"
