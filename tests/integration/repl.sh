#!/usr/bin/env bash
# The REPL through a pty: multi-line function, =expr, history file.
set -euo pipefail
exec timeout 120 python3 "$GENEVA_SOURCE_DIR/tests/support/repl_pty.py" "$GENEVA_BIN"
