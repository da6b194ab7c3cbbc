#!/usr/bin/env python3
"""Drives tests/fakes/kube_apiserver.py with the real kubectl (token and
client-certificate auth) and with urllib, and checks what the emulator
claims: RayCluster CRUD, selectors, watch, pruning warnings, the controller's
status and Warning events, the service proxy, deletion stopping the
dashboard emulator, and auth failures. Run by tests/integration/kube_fake.sh.

Every wait is bounded and polls; no sleep is an assertion.
"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "..", "fakes", "kube_apiserver.py")
PLUGIN = os.path.join(HERE, "..", "fakes", "kube_exec_plugin.py")
TMP = tempfile.mkdtemp(prefix="kube-fake-check-")
checks = 0

RC_YAML = """\
apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: %(name)s
  labels: {app: geneva, team: %(team)s}
spec:
  rayVersion: "2.52.0"
  foo: bar
  headGroupSpec:
    rayStartParams: {"num-cpus": "0"}
    template:
      spec:
        containers:
        - name: ray-head
          image: rayproject/ray:2.52.0
          resources: {requests: {cpu: "1", memory: 4Gi}, limits: {cpu: "1", memory: 4Gi}}
          ports: [{name: dashboard, containerPort: 8265}, {name: gcs-server, containerPort: 6379}]
  workerGroupSpecs:
  - groupName: cpu
    replicas: 2
    minReplicas: %(min)d
    maxReplicas: 4
    rayStartParams: {}
    template:
      spec:
        containers:
        - name: ray-worker
          image: rayproject/ray:2.52.0
          resources: {requests: {cpu: "2", memory: 4Gi}, limits: {cpu: "2", memory: 4Gi}}
"""


def ok(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def wait_for(pred, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Emulator:
    def __init__(self, *args):
        self.state_dir = os.path.join(TMP, "state")
        self.p = subprocess.Popen([sys.executable, EMULATOR, "--max-life", "300",
                                   "--state-dir", self.state_dir, *args],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.startswith("listening https://127.0.0.1:"), line
        self.url = line.split()[1]
        self.kubeconfig = self.p.stdout.readline().decode().split()[1]
        self.ctx = ssl.create_default_context(cafile=os.path.join(self.state_dir, "ca.crt"))
        self.tokens = self.state()["tokens"]

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError("emulator did not exit when its stdin closed")

    def call(self, method, path, body=None, token="admin", headers=None):
        h = {"Accept": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + (self.tokens.get(token) or token)
        h.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ctx) as r:
                return r.status, json.loads(r.read() or b"null"), r.headers
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw), e.headers
            except ValueError:
                return e.code, raw.decode(), e.headers

    def state(self):
        return self.call("GET", "/_emulator/state", token=None)[1]

    def post(self, hook, body):
        return self.call("POST", "/_emulator/" + hook, body, token=None)[1]

    def cluster(self, name):
        return next((c for c in self.state()["clusters"] if c["name"] == name), None)


def kubectl(emu, *args, context="token", stdin=None, check=True):
    env = dict(os.environ, KUBECONFIG=emu.kubeconfig, HOME=TMP)
    p = subprocess.run(["kubectl", "--context", context, "--request-timeout=20s", *args],
                       input=stdin, capture_output=True, text=True, env=env, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("kubectl %s: %s%s" % (" ".join(args), p.stdout, p.stderr))
    return p


def names(out):
    return sorted(line.split()[0] for line in out.splitlines()[1:] if line.strip())


def check_crud(emu):
    yaml = RC_YAML % {"name": "rc-demo", "team": "ml", "min": 0}
    p = kubectl(emu, "create", "-f", "-", stdin=yaml, check=False)
    ok(p.returncode != 0 and 'strict decoding error: unknown field "spec.foo"' in p.stderr,
       "kubectl's default Strict validation refuses spec.foo: " + p.stderr)
    p = kubectl(emu, "create", "--validate=warn", "-f", "-", stdin=yaml)
    ok('Warning: unknown field "spec.foo"' in p.stderr, "the pruning warning: " + p.stderr)
    ok("raycluster.ray.io/rc-demo created" in p.stdout, p.stdout)
    kubectl(emu, "create", "--validate=warn", "-f", "-",
            stdin=RC_YAML % {"name": "rc-other", "team": "web", "min": 0})
    p = kubectl(emu, "create", "--validate=false", "-f", "-", stdin=yaml, check=False)
    ok("AlreadyExists" in p.stderr and 'rayclusters.ray.io "rc-demo" already exists' in p.stderr,
       "duplicate: " + p.stderr)
    st, body, _ = emu.call("POST", "/apis/ray.io/v1/namespaces/default/rayclusters",
                           {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {},
                            "spec": {"headGroupSpec": {"template": {}}}})
    ok(st == 422 and body["reason"] == "Invalid" and
       body["details"]["causes"][0]["field"] == "metadata.name", "422 without a name: %r" % body)
    st, body, _ = emu.call("POST", "/apis/ray.io/v1/namespaces/default/rayclusters",
                           {"apiVersion": "ray.io/v1", "kind": "RayCluster",
                            "metadata": {"name": "rc-x"}, "spec": {"headGroupSpec": {
                                "rayStartParams": {"num-cpus": 1}, "template": {}}}})
    ok(st == 422 and "spec.headGroupSpec.rayStartParams.num-cpus" in body["message"]
       and "must be of type string" in body["message"], "rayStartParams are strings: %r" % body)
    # label selectors: =, !=, in, notin, exists, !exists
    for sel, want in (("app=geneva", ["rc-demo", "rc-other"]), ("team!=ml", ["rc-other"]),
                      ("team in (ml,x)", ["rc-demo"]), ("team notin (ml)", ["rc-other"]),
                      ("team", ["rc-demo", "rc-other"]), ("!team", [])):
        out = kubectl(emu, "get", "rayclusters", "-l", sel).stdout
        ok(names(out) == want, "-l %s: %s" % (sel, out))
    # wait for ready through a watch (kubectl wait watches from the get's resourceVersion)
    kubectl(emu, "wait", "--for=jsonpath={.status.state}=ready", "raycluster/rc-demo",
            "--timeout=20s")
    rc = json.loads(kubectl(emu, "get", "raycluster", "rc-demo", "-o", "json").stdout)
    st = rc["status"]
    conds = {c["type"]: c for c in st["conditions"]}
    ok(st["state"] == "ready" and conds["HeadPodReady"]["status"] == "True"
       and st["head"]["serviceName"] == "rc-demo-head-svc" and st["head"]["podIP"]
       and st["endpoints"]["dashboard"] == "8265" and st["desiredWorkerReplicas"] == 2
       and st["desiredCPU"] == "5" and st["desiredMemory"] == "12Gi"
       and rc["metadata"]["generation"] == 1 and "foo" not in rc["spec"], "status: %r" % st)
    table = kubectl(emu, "get", "rayclusters").stdout
    ok(table.split("\n")[0].split()[:3] == ["NAME", "DESIRED", "WORKERS"] and " ready " in table,
       "the CRD's printer columns: " + table)
    st, lst, _ = emu.call("GET", "/apis/ray.io/v1/namespaces/default/rayclusters?limit=1")
    ok(st == 200 and lst["kind"] == "RayClusterList" and len(lst["items"]) == 1
       and lst["metadata"]["continue"] and lst["metadata"]["resourceVersion"], "paging: %r" % lst)


def check_proxy_and_events(emu):
    svc = "/api/v1/namespaces/default/services/%s/proxy/api/version"
    st, body, _ = emu.call("GET", svc % "rc-demo-head-svc:dashboard")
    ok(st == 200 and body["ray_version"] == "2.52.0", "dashboard through the proxy: %r" % body)
    curl = subprocess.run(["curl", "-s", "--cacert", os.path.join(emu.state_dir, "ca.crt"),
                           "--cert", os.path.join(emu.state_dir, "client.crt"),
                           "--key", os.path.join(emu.state_dir, "client.key"),
                           emu.url + svc % "http:rc-demo-head-svc:dashboard"],
                          capture_output=True, text=True, timeout=30)
    ok(json.loads(curl.stdout)["ray_version"] == "2.52.0", "curl, client cert: " + curl.stdout)
    check_websocket(emu)
    # until the dashboard is up: 503 no endpoints
    emu.post("config", {"ready_delay": 2})
    kubectl(emu, "create", "--validate=warn", "-f", "-",
            stdin=RC_YAML % {"name": "rc-slow", "team": "ml", "min": 0})
    st, body, _ = emu.call("GET", svc % "rc-slow-head-svc:dashboard")
    ok(st == 503 and body["message"] == 'no endpoints available for service "rc-slow-head-svc"',
       "503 before the dashboard: %r" % body)
    wait_for(lambda: emu.call("GET", svc % "rc-slow-head-svc:dashboard")[0] == 200, "rc-slow up")
    emu.post("config", {"ready_delay": 0.5})
    # an invalid spec: accepted by the apiserver, a Warning event from the controller
    kubectl(emu, "create", "--validate=warn", "-f", "-",
            stdin=RC_YAML % {"name": "rc-bad", "team": "ml", "min": 5})
    ev = wait_for(lambda: kubectl(emu, "get", "events", "--field-selector",
                                  "involvedObject.name=rc-bad").stdout.count("Invalid"),
                  "the InvalidRayClusterSpec event")
    out = kubectl(emu, "get", "events", "--field-selector", "involvedObject.name=rc-bad").stdout
    ok(ev and "Warning" in out and "InvalidRayClusterSpec" in out
       and "minReplicas 5 greater than maxReplicas 4" in out, "kubectl get events: " + out)
    long_name = "rc-" + "x" * 60
    kubectl(emu, "create", "--validate=warn", "-f", "-",
            stdin=RC_YAML % {"name": long_name, "team": "ml", "min": 0})
    wait_for(lambda: "InvalidRayClusterMetadata" in json.dumps(emu.call(
        "GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D" + long_name)[1]),
        "the InvalidRayClusterMetadata event")
    time.sleep(1)
    ok(emu.cluster("rc-bad")["state"] is None and emu.cluster("rc-bad")["dashboard"] is None,
       "an invalid cluster never becomes ready")


def check_websocket(emu):
    """The log tail WebSocket through the proxy: upgrade, then frames."""
    import base64
    import socket
    st, job, _ = emu.call("POST", "/api/v1/namespaces/default/services/rc-demo-head-svc:dashboard"
                          "/proxy/api/jobs/", {"entrypoint": "echo through-the-proxy"})
    ok(st == 200, "submit through the proxy: %r" % job)
    host, port = emu.url.split("//")[1].split(":")
    raw = emu.ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=20),
                              server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(("GET /api/v1/namespaces/default/services/rc-demo-head-svc:dashboard/proxy"
                 "/api/jobs/%s/logs/tail HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "Authorization: Bearer %s\r\n\r\n"
                 % (job["submission_id"], host, key, emu.tokens["admin"])).encode())
    data = b""
    while b"through-the-proxy" not in data:
        chunk = raw.recv(65536)
        if not chunk:
            break
        data += chunk
    raw.close()
    ok(data.startswith(b"HTTP/1.1 101") and b"through-the-proxy" in data,
       "WebSocket through the proxy: %r" % data[:300])


def check_watch(emu):
    st, lst, _ = emu.call("GET", "/apis/ray.io/v1/namespaces/default/rayclusters")
    rv = lst["metadata"]["resourceVersion"]
    req = urllib.request.Request(
        emu.url + "/apis/ray.io/v1/namespaces/default/rayclusters?watch=1&timeoutSeconds=10"
        "&fieldSelector=metadata.name%3Drc-watch&resourceVersion=" + rv,
        headers={"Authorization": "Bearer " + emu.tokens["admin"]})
    stream = urllib.request.urlopen(req, timeout=30, context=emu.ctx)
    kubectl(emu, "create", "--validate=warn", "-f", "-",
            stdin=RC_YAML % {"name": "rc-watch", "team": "ml", "min": 0})
    seen = []
    while not any(t == "MODIFIED" and (o.get("status") or {}).get("state") == "ready"
                  for t, o in seen):
        ev = json.loads(stream.readline())
        seen.append((ev["type"], ev["object"]))
    stream.close()
    ok(seen[0][0] == "ADDED" and all(o["metadata"]["name"] == "rc-watch" for _, o in seen),
       "watch events: %r" % [t for t, _ in seen])
    emu.post("compact", {})
    req = urllib.request.Request(
        emu.url + "/apis/ray.io/v1/namespaces/default/rayclusters?watch=1&resourceVersion=" + rv,
        headers={"Authorization": "Bearer " + emu.tokens["admin"]})
    with urllib.request.urlopen(req, timeout=30, context=emu.ctx) as s:
        ev = json.loads(s.readline())
    ok(ev["type"] == "ERROR" and ev["object"]["code"] == 410, "410 after compaction: %r" % ev)


def check_delete(emu):
    for name, how in (("rc-demo", "kubectl"), ("rc-slow", "Foreground"), ("rc-watch", "Orphan")):
        pid = wait_for(lambda: (emu.cluster(name) or {}).get("dashboard"), name + " dashboard")["pid"]
        ok(pid_alive(pid), name + " dashboard alive")
        if how == "kubectl":
            p = kubectl(emu, "delete", "raycluster", name, context="cert")
            ok('raycluster.ray.io "%s" deleted' % name in p.stdout, p.stdout)
        else:
            st, body, _ = emu.call("DELETE", "/apis/ray.io/v1/namespaces/default/rayclusters/" + name,
                                   {"kind": "DeleteOptions", "apiVersion": "v1",
                                    "propagationPolicy": how})
            ok(st == 200 and body["metadata"].get("deletionTimestamp"), "%s: %r" % (how, body))
        wait_for(lambda: emu.cluster(name) is None, name + " gone")
        if how == "Orphan":
            orphan = [d for d in emu.state()["orphaned_dashboards"] if d["name"] == name]
            ok(orphan and pid_alive(pid), "Orphan leaves the dashboard running")
            emu.orphan_pid = pid
        else:
            wait_for(lambda: not pid_alive(pid), name + " dashboard stopped", 15)
    st, body, _ = emu.call("DELETE", "/apis/ray.io/v1/namespaces/default/rayclusters/rc-demo")
    ok(st == 404 and body["reason"] == "NotFound"
       and body["message"] == 'rayclusters.ray.io "rc-demo" not found', "404: %r" % body)
    st, body, _ = emu.call("DELETE", "/apis/ray.io/v1/namespaces/default/rayclusters/rc-other"
                           "?propagationPolicy=Background")
    ok(st == 200 and body["status"] == "Success" and body["details"]["uid"], "Background: %r" % body)


def check_auth(emu):
    path = "/apis/ray.io/v1/namespaces/default/rayclusters"
    for token in (None, "not-a-token"):
        st, body, _ = emu.call("GET", path, token=token)
        ok(st == 401 and body == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Failure", "message": "Unauthorized",
                                  "reason": "Unauthorized", "code": 401}, "401: %r" % body)
    st, body, _ = emu.call("GET", path, token="nobody")
    ok(st == 403 and body["reason"] == "Forbidden" and 'User "nobody" cannot list' in body["message"],
       "403: %r" % body)
    runs = emu.state()["exec_plugin_runs"]
    out = kubectl(emu, "get", "rayclusters", context="exec").stdout
    ok("rc-bad" in out and emu.state()["exec_plugin_runs"] > runs, "exec plugin context")
    # a token the plugin says is valid for an hour, the server for 3 s (time
    # enough to use it once on a loaded CI machine)
    cred = json.loads(subprocess.run(
        [sys.executable, PLUGIN, "--key-file", os.path.join(emu.state_dir, "exec-plugin.key"),
         "--ttl", "3600", "--server-ttl", "3"], capture_output=True, text=True, check=True).stdout)
    ok(cred["kind"] == "ExecCredential" and cred["apiVersion"] == "client.authentication.k8s.io/v1"
       and cred["status"]["expirationTimestamp"].endswith("Z"), "ExecCredential: %r" % cred)
    tok = cred["status"]["token"]
    ok(emu.call("GET", path, token=tok)[0] == 200, "a fresh exec token works")
    wait_for(lambda: emu.call("GET", path, token=tok)[0] == 401, "the exec token expires", 10)
    tok = emu.post("tokens", {"user": "short", "ttl": 3})["token"]
    ok(emu.call("GET", path, token=tok)[0] == 200, "a minted token works")
    wait_for(lambda: emu.call("GET", path, token=tok)[0] == 401, "the minted token expires", 10)
    p = kubectl(emu, "get", "rayclusters", context="nobody", check=False)
    ok(p.returncode != 0 and "Forbidden" in p.stderr, "kubectl sees 403: " + p.stderr)


def check_faults(emu):
    path = "/apis/ray.io/v1/namespaces/default/rayclusters"
    emu.post("faults", {"route": "list", "action": "status", "status": 429, "retry_after": 2})
    st, body, headers = emu.call("GET", path)
    ok(st == 429 and headers["Retry-After"] == "2" and body["reason"] == "TooManyRequests"
       and body["details"]["retryAfterSeconds"] == 2, "429: %r" % body)
    ok(emu.call("GET", path)[0] == 200, "the fault is used up")
    c = emu.state()["counters"]
    ok(c.get("create rayclusters", 0) >= 4 and c.get("proxy GET", 0) >= 3, "counters: %r" % c)


def main():
    if not shutil.which("kubectl"):
        print("kubectl not installed: skipped")
        return 0
    emu = Emulator("--ready-delay", "0.5")
    try:
        check_crud(emu)
        check_proxy_and_events(emu)
        check_watch(emu)
        check_delete(emu)
        check_auth(emu)
        check_faults(emu)
        left = [d["pid"] for d in emu.state()["stopped_dashboards"] if d["alive"]]
        ok(not left, "stopped dashboards are gone: %r" % left)
    finally:
        emu.close()
    # on exit the emulator stops every dashboard it started, orphans included
    wait_for(lambda: not pid_alive(getattr(emu, "orphan_pid", 0) or 1 << 22), "orphan stopped", 10)
    shutil.rmtree(TMP, ignore_errors=True)
    print("kube_fake_check: %d checks passed" % checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
