#!/usr/bin/env python3
"""Loopback HTTP(S) server for the http specs (Python 3 standard library only).

usage: httpd.py [--tls CERT KEY] [--client-ca FILE] [--max-life SECONDS]

Listens on 127.0.0.1 on an ephemeral port and prints the port as the first
line of stdout. It exits when its stdin closes (start it with io.popen(cmd,
"w") and close the handle) or after --max-life seconds (default 300), so it
never outlives the test that started it.

Endpoints (any method):
  /status/<code>      answers <code> with a short text body
  /echo               answers JSON: method, path, query, headers (lower-cased
                      names), body (when under 1 MiB), body_length,
                      body_sha256, client_port, client_cert (subject CN)
  /slow?seconds=N     sleeps N seconds, then answers 200
  /bytes?n=N          answers N deterministic bytes (byte i is i % 251);
                      &chunked=1 omits Content-Length
  /redirect?to=PATH   answers 302 with Location PATH (default /echo)
  /multi              answers with a header repeated (X-Multi: a, X-Multi: b)
"""
import hashlib
import http.server
import json
import os
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, so sessions can be tested

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, code, body, ctype="text/plain", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self.read_body()
        parts = url.path.strip("/").split("/")
        if parts[0] == "status" and len(parts) == 2 and parts[1].isdigit():
            code = int(parts[1])
            self.send(code, ("status %d\n" % code).encode())
        elif parts[0] == "echo":
            cert = None
            getpeercert = getattr(self.connection, "getpeercert", None)
            if getpeercert and getpeercert():
                for rdn in getpeercert().get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cert = v
            doc = {
                "method": self.command,
                "path": url.path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_length": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "client_port": self.client_address[1],
                "client_cert": cert,
            }
            if len(body) < (1 << 20):
                doc["body"] = body.decode("latin-1")
            self.send(200, json.dumps(doc).encode(), "application/json")
        elif parts[0] == "slow":
            time.sleep(float(query.get("seconds", "1")))
            self.send(200, b"slow done\n")
        elif parts[0] == "bytes":
            n = int(query.get("n", "0"))
            data = bytes(i % 251 for i in range(n))
            if query.get("chunked") == "1":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, n, 65536):
                    chunk = data[i:i + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send(200, data, "application/octet-stream")
        elif parts[0] == "redirect":
            self.send(302, b"see other\n", extra=[("Location", query.get("to", "/echo"))])
        elif parts[0] == "multi":
            self.send(200, b"multi\n", extra=[("X-Multi", "a"), ("X-Multi", "b")])
        else:
            self.send(404, b"not found\n")

    def __getattr__(self, name):
        # do_GET, do_POST, do_WHATEVER: every method goes to handle_any
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tls = None

    def finish_request(self, request, client_address):
        # the TLS handshake runs in the connection's thread, so a client
        # that fails it (or never starts it) cannot stall the accept loop
        if self.tls:
            request.settimeout(30)
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass   # dropped connections are part of the tests


def main():
    args = sys.argv[1:]
    cert = key = client_ca = None
    max_life = 300.0
    while args:
        a = args.pop(0)
        if a == "--tls":
            cert, key = args.pop(0), args.pop(0)
        elif a == "--client-ca":
            client_ca = args.pop(0)
        elif a == "--max-life":
            max_life = float(args.pop(0))
        else:
            sys.exit("httpd.py: unknown argument %r" % a)
    server = Server(("127.0.0.1", 0), Handler)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
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
