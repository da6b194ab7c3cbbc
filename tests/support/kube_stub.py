#!/usr/bin/env python3
"""A tiny Kubernetes API stub for the kube client specs (standard library only).

Not the emulator (tests/fakes/kube_apiserver): just enough of the API to
check our client's requests, auth and error handling.

usage: kube_stub.py [--tls CERT KEY] [--client-ca FILE] [--tokens FILE]
                    [--max-life SECONDS]

Prints its port on the first line of stdout; exits when stdin closes.

Auth: with --tokens, a request needs `Authorization: Bearer <t>` where <t>
is a line of FILE (read on every request, so a test or an exec plugin can
rotate it); with --client-ca, a verified client certificate is accepted
too. Otherwise 401 with a Status object.

Routes:
  POST/GET  /apis/ray.io/v1/namespaces/NS/rayclusters   create (409, 422 for a
            bad name, Warning header for unknown spec fields) / list
            (labelSelector a=b[,c=d], limit + continue)
  GET/DELETE /apis/ray.io/v1/namespaces/NS/rayclusters/NAME
  GET       /api/v1/namespaces/NS/events?fieldSelector=involvedObject.name=X
  ANY       /api/v1/namespaces/NS/services/SVC:PORT/proxy/PATH  echoes
  /_stub/requests    GET: the requests seen (method, path, query, token, cert)
  /_stub/reset       POST: forget requests, objects and throttling
  /_stub/throttle    POST ?n=N&code=429&retry_after=S: the next N API requests answer code
  /_stub/event       POST JSON event: stored for the events route
  /status/CODE       ?reason=R&message=M&causes=JSON: a Status object (after auth)
  /text/CODE         plain text (after auth)
"""
import json
import re
import ssl
import sys
import os
import threading
import urllib.parse
import http.server

STATE = {"requests": [], "objects": {}, "throttle": None, "events": []}
LOCK = threading.Lock()
TOKENS = None
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
KNOWN_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
              "autoscalerOptions", "suspend", "authOptions"}


def status(code, reason, message, causes=None, details=None):
    d = dict(details or {})
    if causes:
        d["causes"] = causes
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": d, "code": code}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, doc, extra=(), ctype="application/json"):
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def client_cn(self):
        getpeercert = getattr(self.connection, "getpeercert", None)
        cert = getpeercert() if getpeercert else None
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    return v
        return None

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        path = url.path
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        cn = self.client_cn()
        if path.startswith("/_stub/"):
            return self.stub(path, query, raw)
        with LOCK:
            STATE["requests"].append({"method": self.command, "path": path, "query": query,
                                      "token": token, "cert": cn,
                                      "content_type": self.headers.get("Content-Type"),
                                      "accept": self.headers.get("Accept"),
                                      "body": raw.decode("utf-8", "replace")})
            th = STATE["throttle"]
            if th and th["n"] > 0:
                th["n"] -= 1
                extra = [("Retry-After", th["retry_after"])] if th["retry_after"] else []
                code = th["code"]
                return self.reply(code, status(code, "TooManyRequests" if code == 429 else "ServiceUnavailable",
                                               "slow down"), extra)
        if TOKENS is not None or CLIENT_CA:
            valid = []
            if TOKENS is not None:
                try:
                    with open(TOKENS) as f:
                        valid = [l.strip() for l in f if l.strip()]
                except OSError:
                    valid = []
            if not (cn or (token and token in valid)):
                return self.reply(401, status(401, "Unauthorized", "Unauthorized"))
        self.route(path, query, raw)

    def stub(self, path, query, raw):
        parts = path.strip("/").split("/")
        if parts[1] == "requests":
            with LOCK:
                return self.reply(200, STATE["requests"])
        if parts[1] == "reset":
            with LOCK:
                STATE.update({"requests": [], "objects": {}, "throttle": None, "events": []})
            return self.reply(200, {})
        if parts[1] == "throttle":
            with LOCK:
                STATE["throttle"] = {"n": int(query.get("n", "1")), "code": int(query.get("code", "429")),
                                     "retry_after": query.get("retry_after")}
            return self.reply(200, {})
        if parts[1] == "event":
            with LOCK:
                STATE["events"].append(json.loads(raw))
            return self.reply(200, {})
        self.reply(404, status(404, "NotFound", "no such stub route"))

    def route(self, path, query, raw):
        m = re.match(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayclusters(?:/([^/]+))?$", path)
        if m:
            return self.rayclusters(m.group(1), m.group(2), query, raw)
        m = re.match(r"^/api/v1/namespaces/([^/]+)/events$", path)
        if m and self.command == "GET":
            sel = query.get("fieldSelector", "")
            name = sel.split("=", 1)[1] if sel.startswith("involvedObject.name=") else None
            with LOCK:
                items = [e for e in STATE["events"]
                         if name is None or e.get("involvedObject", {}).get("name") == name]
            return self.reply(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items})
        m = re.match(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy/(.*)$", path)
        if m:
            return self.reply(200, {"namespace": m.group(1), "service": m.group(2), "path": m.group(3),
                                    "query": query, "method": self.command})
        m = re.match(r"^/status/(\d+)$", path)
        if m:
            code = int(m.group(1))
            causes = json.loads(query["causes"]) if "causes" in query else None
            return self.reply(code, status(code, query.get("reason", "Whatever"),
                                           query.get("message", "a message"), causes))
        m = re.match(r"^/text/(\d+)$", path)
        if m:
            return self.reply(int(m.group(1)), b"plain text failure\nsecond line\n", ctype="text/plain")
        self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))

    def rayclusters(self, ns, name, query, raw):
        objs = STATE["objects"]
        if name is None and self.command == "POST":
            obj = json.loads(raw)
            meta = obj.setdefault("metadata", {})
            nm = meta.get("name", "")
            if not NAME_RE.match(nm):
                return self.reply(422, status(422, "Invalid", 'RayCluster.ray.io "%s" is invalid' % nm, [
                    {"reason": "FieldValueInvalid", "message": "Invalid value: \"%s\": a lowercase RFC 1123 label" % nm,
                     "field": "metadata.name"}]))
            with LOCK:
                if (ns, nm) in objs:
                    return self.reply(409, status(409, "AlreadyExists",
                                                  'rayclusters.ray.io "%s" already exists' % nm,
                                                  details={"name": nm, "group": "ray.io", "kind": "rayclusters"}))
                extra = []
                for k in sorted(obj.get("spec", {})):
                    if k not in KNOWN_SPEC:
                        del obj["spec"][k]
                        extra.append(("Warning", '299 - "unknown field \\"spec.%s\\""' % k))
                meta["namespace"] = ns
                meta["resourceVersion"] = str(len(objs) + 1)
                meta["uid"] = "uid-%s" % nm
                objs[(ns, nm)] = obj
            return self.reply(201, obj, extra)
        if name is None and self.command == "GET":
            sel = query.get("labelSelector")
            want = dict(p.split("=", 1) for p in sel.split(",")) if sel else {}
            with LOCK:
                items = [o for (n, _), o in sorted(objs.items()) if n == ns and
                         all(o["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]
            start = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0) or len(items) or 1
            page = items[start:start + limit]
            meta = {"resourceVersion": "99"}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            return self.reply(200, {"kind": "RayClusterList", "apiVersion": "ray.io/v1", "metadata": meta,
                                    "items": page})
        with LOCK:
            obj = objs.get((ns, name))
            if obj is None:
                return self.reply(404, status(404, "NotFound", 'rayclusters.ray.io "%s" not found' % name,
                                              details={"name": name, "group": "ray.io", "kind": "rayclusters"}))
            if self.command == "GET":
                return self.reply(200, obj)
            if self.command == "DELETE":
                del objs[(ns, name)]
                return self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                                        "details": {"name": name}})
        self.reply(405, status(405, "MethodNotAllowed", "method not allowed"))

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tls = None

    def finish_request(self, request, client_address):
        if self.tls:
            request.settimeout(30)
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass


CLIENT_CA = None


def main():
    global TOKENS, CLIENT_CA
    args = sys.argv[1:]
    cert = key = None
    max_life = 300.0
    while args:
        a = args.pop(0)
        if a == "--tls":
            cert, key = args.pop(0), args.pop(0)
        elif a == "--client-ca":
            CLIENT_CA = args.pop(0)
        elif a == "--tokens":
            TOKENS = args.pop(0)
        elif a == "--max-life":
            max_life = float(args.pop(0))
        else:
            sys.exit("kube_stub.py: unknown argument %r" % a)
    server = Server(("127.0.0.1", 0), Handler)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if CLIENT_CA:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(CLIENT_CA)
        server.tls = ctx
    print(server.server_address[1], flush=True)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Timer(max_life, lambda: os._exit(0)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
