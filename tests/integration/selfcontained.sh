#!/usr/bin/env bash
# The repository's docs and comments stand on their own (issue 12): none
# points at a file that is not in it — the team's notes beside the checkout
# (design.md and its sections, pitfalls.md, style.md, reference/*.md,
# ../shared/). A fact they held is written where it is used, or in
# docs/internals.md ("Traps we met") or the README.
set -euo pipefail
: "${GENEVA_SOURCE_DIR:?}"
cd "$GENEVA_SOURCE_DIR"
pattern='pitfalls\.md|design\.md|design §|\(design [0-9]|style\.md|reference/[a-z-]+|\.\./shared'
hits=$(grep -rnE "$pattern" --exclude-dir=.git --exclude-dir='build*' \
  --exclude=selfcontained.sh . || true)
if [ -n "$hits" ]; then
  echo "references to files outside the repository:"
  echo "$hits"
  exit 1
fi
echo "ok: no references outside the repository"
