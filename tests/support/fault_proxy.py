"""A reverse proxy on loopback that injects S3 faults (Python stdlib only).

    python3 fault_proxy.py UPSTREAM_URL

Prints `listening http://127.0.0.1:PORT`, then forwards every request to
UPSTREAM_URL (Host header and body unchanged, so signatures still hold)
until its stdin closes.

Faults, set with POST /__faults__ (JSON) and read with GET /__faults__:
  {"sequence": ["503", "reset", "pass", "slow:0.5", ...],
   "rates": {"503": 0.2, "reset": 0.1, "slow": 0.05}, "slow_seconds": 0.3,
   "match": "partNumber=2", "seed": 1, "trace": false}
Each request matching `match` (a substring of "METHOD /path?query"; all
when absent) takes the next action of `sequence`, and once that is used up
draws one from `rates`. Actions:
  pass      forward it
  503       answer 503 with an S3 SlowDown error body (not forwarded)
  500       answer 500 InternalError (not forwarded)
  reset     read the request, then reset the connection (not forwarded)
  reset_after  forward it, then reset instead of answering (it took effect)
  slow[:s]  wait s seconds (default slow_seconds), then forward
  ok200     answer 200 with an ETag without forwarding (a store that
            accepts a PUT it should have refused)
GET /__faults__ gives {"requests": n, "injected": {action: n}, "log": [...]}.
"""
import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")

STATE = {"sequence": [], "rates": {}, "slow_seconds": 0.3, "match": None,
         "requests": 0, "injected": {}, "log": []}
LOCK = threading.Lock()
RNG = random.Random(0)
UPSTREAM = None


def next_action(target):
    with LOCK:
        STATE["requests"] += 1
        if STATE["match"] and STATE["match"] not in target:
            return "pass"
        if STATE["sequence"]:
            action = STATE["sequence"].pop(0)
        else:
            action = "pass"
            r = RNG.random()
            for name, rate in sorted(STATE["rates"].items()):
                if r < rate:
                    action = name
                    break
                r -= rate
        if action != "pass":
            kind = action.split(":")[0]
            STATE["injected"][kind] = STATE["injected"].get(kind, 0) + 1
            STATE["log"].append("%s %s" % (action, target))
        elif STATE.get("trace"):
            STATE["log"].append("pass %s" % target)
        return action


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, status, body, ctype="application/xml"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset(self):
        # SO_LINGER 0: close() sends RST, as a dropped connection would
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def control(self, body):
        if self.command == "POST":
            spec = json.loads(body or b"{}")
            with LOCK:
                for k in ("sequence", "rates", "slow_seconds", "match", "trace"):
                    if k in spec:
                        STATE[k] = spec[k]
                if "seed" in spec:
                    RNG.seed(spec["seed"])
                if spec.get("reset_counters"):
                    STATE["requests"], STATE["injected"], STATE["log"] = 0, {}, []
        with LOCK:
            doc = {k: STATE[k] for k in ("requests", "injected", "log", "sequence")}
        self.answer(200, json.dumps(doc).encode(), "application/json")

    def forward(self, body):
        u = urllib.parse.urlsplit(UPSTREAM)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def handle_any(self):
        body = self.read_body()
        if self.path.startswith("/__faults__"):
            return self.control(body)
        action = next_action("%s %s" % (self.command, self.path))
        kind, _, arg = action.partition(":")
        if kind == "503":
            return self.answer(503, SLOWDOWN)
        if kind == "500":
            return self.answer(500, INTERNAL)
        if kind == "reset":
            return self.reset()
        if kind == "ok200":
            self.send_response(200)
            self.send_header("ETag", '"00000000000000000000000000000000"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "slow":
            time.sleep(float(arg or STATE["slow_seconds"]))
        status, headers, data = self.forward(body)
        if kind == "reset_after":
            return self.reset()
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def main():
    global UPSTREAM
    UPSTREAM = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("listening http://127.0.0.1:%d" % server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
