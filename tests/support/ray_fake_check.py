#!/usr/bin/env python3
"""Drives tests/fakes/ray_dashboard.py over loopback with urllib and checks
the upstream behaviour it emulates. Run by tests/integration/ray_fake.sh.

Every wait is bounded and polls; no sleep is an assertion.
"""
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "..", "fakes", "ray_dashboard.py")
UA = {"User-Agent": "geneva-test/1"}
DEADLINE = float(os.environ.get("RAY_FAKE_DEADLINE", "20"))
TMP = tempfile.mkdtemp(prefix="ray-fake-check-")
checks = 0


def ok(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


class Emulator:
    def __init__(self, *args):
        self.p = subprocess.Popen([sys.executable, EMULATOR, "--max-life", "300", *args],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.startswith("listening http://127.0.0.1:"), line
        self.url = line.split()[1]

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError("emulator did not exit when its stdin closed")

    def call(self, method, path, body=None, headers=None, raw=False):
        h = dict(UA)
        h.update(headers or {})
        data = body
        if body is not None and not isinstance(body, (bytes, bytearray)) and not hasattr(body, "read"):
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                code, text, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            code, text, ctype = e.code, e.read().decode(), e.headers.get("Content-Type", "")
        if raw or not ctype.startswith("application/json"):
            return code, text
        return code, json.loads(text)

    def job(self, sid):
        code, d = self.call("GET", "/api/jobs/" + sid)
        assert code == 200, (code, d)
        return d

    def wait(self, sid, pred, what):
        end = time.monotonic() + DEADLINE
        while True:
            d = self.job(sid)
            if pred(d):
                return d
            if time.monotonic() > end:
                raise AssertionError("timed out waiting for %s: %s" % (what, d))
            time.sleep(0.05)

    def terminal(self, sid):
        return self.wait(sid, lambda d: d["status"] in ("SUCCEEDED", "FAILED", "STOPPED"),
                         sid + " terminal")

    def state(self):
        return self.call("GET", "/_emulator/state")[1]


def zip_bytes(files):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, (content, mode) in files.items():
            zi = zipfile.ZipInfo(name)
            zi.external_attr = (0o100000 | mode) << 16
            z.writestr(zi, content)
    return b.getvalue()


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_file(path):
    end = time.monotonic() + DEADLINE
    while not (os.path.exists(path) and open(path).read().strip()):
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + path)
        time.sleep(0.05)
    return open(path).read().strip()


def main():
    # ---- the cluster most checks use: 2 CPUs, a short stop grace
    e = Emulator("--num-cpus", "2", "--stop-wait", "0.5", "--gcs-max-size", str(1 << 20))
    try:
        code, v = e.call("GET", "/api/version")
        ok(code == 200 and set(v) == {"version", "ray_version", "ray_commit", "session_name"},
           "version fields: %r" % (v,))
        ok(v["ray_version"] == "2.52.0", "default version")
        code, m = e.call("GET", "/api/authentication_mode")
        ok(code == 200 and m == {"authentication_mode": "disabled"}, "auth mode disabled: %r" % (m,))
        ok(e.call("POST", "/api/jobs", {"entrypoint": "true"})[0] == 404, "no trailing slash: 404")
        code, t = e.call("POST", "/api/jobs/", {"entrypoint": "true"},
                         headers={"User-Agent": "Mozilla/5.0"})
        ok(code == 405 and t == "Method Not Allowed for browser traffic.", "browser guard")
        ok(e.call("GET", "/api/nothing")[0] == 404, "unknown route")

        # ---- packages
        wd = zip_bytes({"run.sh": ("echo out-line; echo err-line >&2; pwd; echo A=$A\n"
                                   "test -x tool.sh && echo mode-kept || echo mode-dropped\n"
                                   "IFS=:; for d in $PYTHONPATH; do "
                                   "[ -f \"$d/mod/data.txt\" ] && cat \"$d/mod/data.txt\"; done\n"
                                   "exit 0\n", 0o644),
                        "tool.sh": ("echo tool\n", 0o755)})
        mod = zip_bytes({"mod/data.txt": ("from-py-modules\n", 0o644)})
        for name, data in (("_ray_pkg_0a1b.zip", wd), ("_ray_pkg_0c2d.zip", mod)):
            code, t = e.call("GET", "/api/packages/gcs/" + name)
            ok(code == 404 and t == "Package gcs://%s does not exist" % name, "package 404: %r" % t)
            ok(e.call("PUT", "/api/packages/gcs/" + name, data)[0] == 200, "package PUT")
            ok(e.call("GET", "/api/packages/gcs/" + name) == (200, ""), "package 200")
        code, t = e.call("PUT", "/api/packages/gcs/_ray_pkg_big.zip", b"x" * (1 << 20))
        ok(code == 500 and "Package size (1.00MiB) exceeds the maximum size" in t,
           "GCS size limit: %d %r" % (code, t[-200:]))

        class Stream:   # a 100 MiB body that never sits in memory
            def __init__(self, n):
                self.n = n

            def read(self, k=1 << 16):
                k = min(k, self.n)
                self.n -= k
                return b"\0" * k
        code, t = e.call("PUT", "/api/packages/gcs/_ray_pkg_huge.zip", Stream(100 << 20),
                         headers={"Content-Length": str(100 << 20)})
        ok(code == 413 and t.startswith("Maximum request body size 104857600 exceeded"),
           "100 MiB body: %d %r" % (code, t))
        ok(e.call("GET", "/api/packages/gcs/_ray_pkg_huge.zip")[0] == 404, "oversize not stored")

        # ---- a job that succeeds, from the uploaded working_dir and py_modules
        env = {"working_dir": "gcs://_ray_pkg_0a1b.zip", "py_modules": ["gcs://_ray_pkg_0c2d.zip"],
               "env_vars": {"A": "from-env"}}
        code, r = e.call("POST", "/api/jobs/", {"entrypoint": "sh run.sh", "submission_id": "ok-1",
                                                "runtime_env": env, "metadata": {"k": "v"},
                                                "entrypoint_num_cpus": None})
        ok(code == 200 and r == {"job_id": "ok-1", "submission_id": "ok-1"}, "submit: %r" % (r,))
        d = e.terminal("ok-1")
        ok(d["status"] == "SUCCEEDED" and d["message"] == "Job finished successfully."
           and d["driver_exit_code"] == 0 and d["error_type"] is None, "succeeded: %r" % d)
        ok(d["type"] == "SUBMISSION" and d["job_id"] is None and d["metadata"] == {"k": "v"}
           and d["runtime_env"] == env and isinstance(d["start_time"], int)
           and d["end_time"] >= d["start_time"] and d["driver_node_id"]
           and d["driver_agent_http_address"].startswith("http://"), "details: %r" % d)
        logs = e.call("GET", "/api/jobs/ok-1/logs")[1]["logs"]
        lines = logs.splitlines()
        ok("Running entrypoint for job ok-1: sh run.sh" in lines and "out-line" in lines
           and "err-line" in lines and "A=from-env" in lines, "logs: %r" % logs)
        ok(any(l.endswith("/working_dir_files/_ray_pkg_0a1b") for l in lines), "cwd is the working_dir")
        ok("mode-dropped" in lines, "extractall drops file modes, as upstream")
        ok("from-py-modules" in lines, "py_modules dir on PYTHONPATH")

        # ---- a job that fails
        e.call("POST", "/api/jobs/", {"entrypoint": "echo about-to-fail; exit 3", "submission_id": "bad-1"})
        d = e.terminal("bad-1")
        ok(d["status"] == "FAILED" and d["driver_exit_code"] == 3
           and d["error_type"] == "JOB_ENTRYPOINT_COMMAND_ERROR"
           and d["message"].startswith("Job entrypoint command failed with exit code 3, last "
                                       "available logs (truncated to 20,000 chars):\n")
           and "about-to-fail" in d["message"], "failed: %r" % d)
        e.call("POST", "/api/jobs/", {"entrypoint": "true", "submission_id": "nopkg",
                                      "runtime_env": {"working_dir": "gcs://_ray_pkg_ffff.zip"}})
        d = e.terminal("nopkg")
        ok(d["status"] == "FAILED" and d["error_type"] == "RUNTIME_ENV_SETUP_FAILURE"
           and d["message"].startswith("runtime_env setup failed: ")
           and "gcs://_ray_pkg_ffff.zip" in d["message"], "missing package: %r" % d)
        ok(e.call("GET", "/api/jobs/nopkg/logs")[1] == {"logs": ""}, "no driver, no logs")

        # ---- validation
        code, t = e.call("POST", "/api/jobs/", {"entrypoint": "true", "bogus": 1})
        ok(code == 400 and "unexpected keyword argument 'bogus'" in t and t.startswith("Traceback"),
           "unknown field: %r" % t)
        code, t = e.call("POST", "/api/jobs/", {"entrypoint": "true", "entrypoint_memory": 1.5})
        ok(code == 400 and "entrypoint_memory must be an integer" in t, "memory type: %r" % t)
        code, t = e.call("POST", "/api/jobs/", {"entrypoint": "true", "metadata": {"a": 1}})
        ok(code == 400 and "metadata values must be strings" in t, "metadata type")
        ok(e.call("POST", "/api/jobs/", b"{not json")[0] == 500, "bad JSON is aiohttp's 500")
        code, t = e.call("POST", "/api/jobs/", {"entrypoint": "true", "submission_id": "ok-1"})
        ok(code == 500 and "Please use a different submission_id" in t, "duplicate id: %d" % code)

        # ---- stop: a job that honours SIGTERM, and one that ignores it
        pidf = os.path.join(TMP, "child.pid")
        e.call("POST", "/api/jobs/", {"entrypoint": "sleep 60 & echo $! > %s; wait" % pidf,
                                      "submission_id": "long-1"})
        child = int(wait_file(pidf))
        ok(pid_alive(child), "child running")
        ok(e.call("POST", "/api/jobs/long-1/stop")[1] == {"stopped": True}, "stop answers true")
        d = e.terminal("long-1")
        ok(d["status"] == "STOPPED" and d["message"] == "Job was intentionally stopped."
           and d["driver_exit_code"] is None, "stopped: %r" % d)
        ok(not pid_alive(child), "the stopped job's child is gone")
        ok(e.call("POST", "/api/jobs/long-1/stop")[1] == {"stopped": False}, "stop again: false")
        pidf2 = os.path.join(TMP, "stubborn.pid")
        e.call("POST", "/api/jobs/", {"entrypoint": "trap '' TERM; echo $$ > %s; "
                                                    "while :; do sleep 0.1; done" % pidf2,
                                      "submission_id": "stubborn"})
        shell = int(wait_file(pidf2))
        code, t = e.call("DELETE", "/api/jobs/stubborn")
        ok(code == 500 and "non-terminal state RUNNING" in t, "delete running: %d %r" % (code, t[-120:]))
        e.call("POST", "/api/jobs/stubborn/stop")
        d = e.terminal("stubborn")
        ok(d["status"] == "STOPPED" and not pid_alive(shell), "SIGKILL after the grace period")
        live = [j for j in e.state()["jobs"] if j["live_pids"]]
        ok(not live, "no live process: %r" % live)

        # ---- delete
        ok(e.call("DELETE", "/api/jobs/stubborn") == (200, {"deleted": True}), "delete terminal")
        code, t = e.call("GET", "/api/jobs/stubborn")
        ok(code == 404 and t == "Job stubborn does not exist", "deleted is gone")
        ok(e.call("DELETE", "/api/jobs/stubborn")[0] == 404, "delete unknown: 404")

        # ---- resources: 2 CPUs; a 2-CPU job holds them, a 1-CPU job waits
        gate = os.path.join(TMP, "gate")
        e.call("POST", "/api/jobs/", {"entrypoint": "while [ ! -e %s ]; do sleep 0.05; done" % gate,
                                      "submission_id": "big", "entrypoint_num_cpus": 2})
        e.wait("big", lambda d: d["status"] == "RUNNING", "big running")
        e.call("POST", "/api/jobs/", {"entrypoint": "true", "submission_id": "small",
                                      "entrypoint_num_cpus": 1})
        e.call("POST", "/api/jobs/", {"entrypoint": "true", "submission_id": "huge",
                                      "entrypoint_num_cpus": 3})
        d = e.job("small")
        ok(d["status"] == "PENDING" and "waiting for resources" in d["message"], "small waits: %r" % d)
        code, st = e.call("GET", "/api/cluster_status")
        usage = st["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        ok(usage["CPU"] == [2.0, 2.0], "cluster_status usage: %r" % usage)
        open(gate, "w").close()
        ok(e.terminal("small")["status"] == "SUCCEEDED", "small ran once big freed its CPUs")
        ok(e.call("POST", "/api/jobs/huge/stop")[1] == {"stopped": True}, "stop pending: true")
        ok(e.job("huge")["status"] == "PENDING", "a stopped PENDING job stays PENDING (ray#58353)")
        # the queued stop takes effect once the job gets its resources
        gate2 = os.path.join(TMP, "gate2")
        e.call("POST", "/api/jobs/", {"entrypoint": "while [ ! -e %s ]; do sleep 0.05; done" % gate2,
                                      "submission_id": "big2", "entrypoint_num_cpus": 2})
        e.wait("big2", lambda d: d["status"] == "RUNNING", "big2 running")
        e.call("POST", "/api/jobs/", {"entrypoint": "sleep 30", "submission_id": "queued",
                                      "entrypoint_num_cpus": 1})
        ok(e.call("POST", "/api/jobs/queued/stop")[1] == {"stopped": True}, "stop queued")
        open(gate2, "w").close()
        ok(e.terminal("queued")["status"] == "STOPPED", "queued stop applied when scheduled")

        code, lst = e.call("GET", "/api/jobs/")
        ok(code == 200 and {"ok-1", "bad-1", "big", "small", "huge"} <= {j["submission_id"] for j in lst},
           "list")
        counters = e.state()["counters"]
        ok(counters.get("package_put_ok") == 2, "PUTs stored: %r" % counters)

        # ---- the emulator's end kills its jobs
        pidf3 = os.path.join(TMP, "orphan.pid")
        e.call("POST", "/api/jobs/", {"entrypoint": "sleep 60 & echo $! > %s; wait" % pidf3,
                                      "submission_id": "orphan"})
        orphan = int(wait_file(pidf3))
    finally:
        e.close()
    end = time.monotonic() + DEADLINE
    while pid_alive(orphan) and time.monotonic() < end:
        time.sleep(0.05)
    ok(not pid_alive(orphan), "stdin closed: the emulator killed its jobs")

    # ---- token auth
    e = Emulator("--auth-token", "s3cret")
    try:
        ok(e.call("GET", "/api/authentication_mode") == (200, {"authentication_mode": "token"}),
           "auth mode token, public")
        ok(e.call("GET", "/api/version") == (401, "Unauthorized: Missing authentication token"), "401")
        ok(e.call("GET", "/api/version", headers={"X-Ray-Authorization": "Bearer nope"})
           == (403, "Forbidden: Invalid authentication token"), "403")
        ok(e.call("GET", "/api/version", headers={"X-Ray-Authorization": "bearer s3cret"})[0] == 403,
           "the Bearer prefix is exact")
        ok(e.call("GET", "/api/version", headers={"X-Ray-Authorization": "Bearer s3cret"})[0] == 200,
           "X-Ray-Authorization")
        ok(e.call("GET", "/api/version", headers={"Authorization": "Bearer s3cret"})[0] == 200,
           "Authorization")
        ok(e.call("GET", "/api/version", headers={"Authorization": "Bearer x",
                                                  "X-Ray-Authorization": "Bearer s3cret"})[0] == 403,
           "Authorization wins over X-Ray-Authorization")
        ok(e.call("GET", "/api/gcs_healthz") == (200, "success"), "healthz is public")
    finally:
        e.close()

    # ---- an older Ray
    e = Emulator("--old", "--ray-version", "2.7.2")
    try:
        ok(e.call("GET", "/api/authentication_mode")[0] == 404, "old: no authentication_mode")
        ok(e.call("GET", "/api/version")[1]["ray_version"] == "2.7.2", "old version")
        code, t = e.call("POST", "/api/jobs/", {"entrypoint": "true", "entrypoint_memory": 1})
        ok(code == 400 and "unexpected keyword argument 'entrypoint_memory'" in t,
           "entrypoint_memory before 2.8: 400")
        ok(e.call("POST", "/api/jobs/", {"entrypoint": "true", "entrypoint_num_cpus": 1})[0] == 200,
           "entrypoint_num_cpus is known")
    finally:
        e.close()

    # ---- two nodes, drivers with core job ids, faults, the log tail, a restart
    e = Emulator("--nodes", "2", "--num-cpus", "1", "--drivers-call-ray-init")
    try:
        gate = os.path.join(TMP, "gate3")
        for sid in ("n-a", "n-b"):
            e.call("POST", "/api/jobs/", {"entrypoint": "while [ ! -e %s ]; do sleep 0.05; done; "
                                                        "echo line1; echo line2" % gate,
                                          "submission_id": sid, "entrypoint_num_cpus": 1})
        a = e.wait("n-a", lambda d: d["status"] == "RUNNING", "n-a running")
        b = e.wait("n-b", lambda d: d["status"] == "RUNNING", "n-b running")
        ok(a["driver_node_id"] != b["driver_node_id"], "one job per node")
        ok(a["job_id"] and e.job(a["job_id"])["submission_id"] == "n-a", "found by core job id")
        ok(a["driver_info"]["id"] == a["job_id"] and isinstance(a["driver_info"]["pid"], str),
           "driver_info")
        frames = []
        with socket.create_connection(("127.0.0.1", int(e.url.rsplit(":", 1)[1])), timeout=30) as s:
            s.sendall(b"GET /api/jobs/n-a/logs/tail HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            f = s.makefile("rb")
            status = f.readline()
            ok(b" 101 " in status, "websocket upgrade: %r" % status)
            while f.readline() not in (b"\r\n", b""):
                pass
            open(gate, "w").close()
            while True:
                h = f.read(2)
                n = h[1] & 0x7F
                if n == 126:
                    n = int.from_bytes(f.read(2), "big")
                elif n == 127:
                    n = int.from_bytes(f.read(8), "big")
                frames.append((h[0] & 0x0F, f.read(n)))
                if frames[-1][0] == 0x8:
                    break
        text = b"".join(p for op, p in frames if op == 0x1).decode()
        ok(frames[-1] == (0x8, (1000).to_bytes(2, "big")) and "line1\nline2\n" in text,
           "tail: %r" % frames)
        e.call("POST", "/_emulator/faults", [{"route": "get", "action": "status", "status": 503,
                                               "count": 1},
                                              {"route": "list", "action": "drop", "count": 1}])
        ok(e.call("GET", "/api/jobs/n-b")[0] == 503, "injected 503")
        ok(e.call("GET", "/api/jobs/n-b")[0] == 200, "only once")
        try:
            e.call("GET", "/api/jobs/")
            dropped = False
        except (http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError):
            dropped = True
        ok(dropped, "injected drop")
        pidf = os.path.join(TMP, "restart.pid")
        e.call("POST", "/api/jobs/", {"entrypoint": "echo $$ > %s; exec sleep 60" % pidf,
                                      "submission_id": "r-1"})
        pid = int(wait_file(pidf))
        e.call("POST", "/_emulator/restart", {"downtime": 0})
        ok(e.call("GET", "/api/jobs/r-1")[0] == 404, "a restarted head forgets its jobs")
        end = time.monotonic() + DEADLINE
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        ok(not pid_alive(pid), "and they die with it")
    finally:
        e.close()

    # ---- the lost answer: accepted, then the connection dropped
    e = Emulator("--fail-next-submit-after-accept")
    try:
        body = {"entrypoint": "true", "submission_id": "lost-1"}
        try:
            e.call("POST", "/api/jobs/", body)
            dropped = False
        except (http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError):
            dropped = True
        ok(dropped, "first submit gets no answer")
        code, t = e.call("POST", "/api/jobs/", body)
        ok(code == 500 and "Job with submission_id lost-1 already exists" in t, "retry sees the job")
        ok(e.terminal("lost-1")["status"] == "SUCCEEDED", "the accepted job ran once")
        ok(len([j for j in e.call("GET", "/api/jobs/")[1]]) == 1, "not doubled")
    finally:
        e.close()
    print("ray_fake: %d checks passed" % checks)


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
