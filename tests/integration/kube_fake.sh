#!/usr/bin/env bash
# The Kubernetes API emulator (tests/fakes/kube_apiserver.py) against the real
# kubectl and the upstream behaviour it claims: RayCluster CRUD, selectors,
# watch, pruning warnings, KubeRay's status and Warning events, the service
# proxy to a dashboard emulator, deletion, token/cert/exec auth.
set -euo pipefail
: "${GENEVA_SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
exec timeout 120 python3 "$GENEVA_SOURCE_DIR/tests/support/kube_fake_check.py"
