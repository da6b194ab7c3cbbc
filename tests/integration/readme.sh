#!/usr/bin/env bash
# README.md runs as written (issue 12): every code block, in file order, in
# one fresh empty directory, with the installed geneva first on PATH, as a
# newcomer following it would.
#   ```lua NAME / ```c NAME   written to NAME (a later block uses it)
#   ```sh                      run with bash -e; ```lua without a name: geneva -
# A comment on the line before a block changes that:
#   <!-- readme.sh: repository root -->  run from the source tree (it uses
#                                        the checkout's files)
#   <!-- readme.sh: skip (WHY) -->       not run; WHY is required
# Any other block, or a failing one, fails the test.
set -euo pipefail
: "${GENEVA_BUILD_DIR:?}" "${GENEVA_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/work" "$tmp/home" "$tmp/tmp" "$tmp/bin"
cmake --install "$GENEVA_BUILD_DIR" --prefix "$tmp/prefix" >/dev/null
libdir=$(ls -d "$tmp/prefix"/lib*/ | head -n1)
if [ "${GENEVA_SANITIZE:-0}" = 1 ]; then   # an instrumented libgeneva needs the runtime
  printf '#!/bin/sh\nexec %s -fsanitize=address,undefined "$@"\n' "$(command -v cc)" >"$tmp/bin/cc"
  chmod +x "$tmp/bin/cc"
fi
# a private HOME and TMPDIR: history, lease journals and temp dirs stay here
export PATH="$tmp/bin:$tmp/prefix/bin:$PATH" PKG_CONFIG_PATH="$libdir/pkgconfig" \
  LD_LIBRARY_PATH="$libdir" HOME="$tmp/home" TMPDIR="$tmp/tmp"
unset XDG_STATE_HOME GENEVA_STDLIB
exec timeout 300 python3 - "$GENEVA_SOURCE_DIR/README.md" "$tmp/work" "$GENEVA_SOURCE_DIR" <<'PY'
import os, re, signal, socket, subprocess, sys

readme, work, root = sys.argv[1:4]
lines = open(readme, encoding="utf-8").read().split("\n")

def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0

def run(cmd, cwd, stdin):
    # its own process group: what a block leaves running (the Ray emulator)
    # is stopped with it
    p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, start_new_session=True)
    try:
        p.communicate(stdin.encode(), timeout=180)
    finally:
        try: os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError: pass
    return p.returncode

failed, ran, i = [], 0, 0
while i < len(lines):
    m = re.match(r"^```(\S*)\s*(\S*)\s*$", lines[i])
    if not m:
        i += 1
        continue
    start, lang, name = i + 1, m.group(1), m.group(2)
    j = lines.index("```", i + 1)
    body = "\n".join(lines[i + 1:j]) + "\n"
    marker = re.match(r"^<!-- readme\.sh: (.*) -->$", lines[i - 1]) if i > 0 else None
    mark = marker.group(1) if marker else ""
    i = j + 1
    where = f"README.md:{start}"
    if mark.startswith("skip (") and mark.endswith(")"):
        print(f"--- {where}: skipped: {mark[6:-1]}")
        continue
    if mark not in ("", "repository root"):
        failed.append(f"{where}: unknown marker '{mark}'")
        continue
    if name:
        with open(os.path.join(work, name), "w") as f: f.write(body)
        print(f"--- {where}: wrote {name}")
        continue
    cwd = root if mark == "repository root" else work
    if "--port 8265" in body and not port_free(8265):
        print(f"--- {where}: skipped: port 8265 is taken on this machine")
        continue
    print(f"--- {where}: {lang} block in {'the source tree' if cwd == root else 'the work dir'}", flush=True)
    if lang == "sh": code = run(["bash", "-e"], cwd, body)
    elif lang == "lua": code = run(["geneva", "-"], cwd, body)
    else:
        failed.append(f"{where}: a '{lang}' block without a file name: nothing runs it")
        continue
    ran += 1
    if code != 0: failed.append(f"{where}: exit {code}")

for f in failed: print("FAILED", f)
print(f"{ran} blocks ran")
sys.exit(1 if failed or ran == 0 else 0)
PY
