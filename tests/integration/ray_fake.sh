#!/usr/bin/env bash
# The Ray dashboard emulator (tests/fakes/ray_dashboard.py) against the
# upstream behaviour it claims: version, auth, packages, jobs that really run,
# stop, delete, resources, and a lost submit answer.
set -euo pipefail
: "${GENEVA_SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
exec timeout 120 python3 "$GENEVA_SOURCE_DIR/tests/support/ray_fake_check.py"
