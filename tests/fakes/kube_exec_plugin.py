#!/usr/bin/env python3
"""An exec credential plugin (client.authentication.k8s.io/v1) for the
Kubernetes API emulator (kube_apiserver.py): it prints an ExecCredential
whose token the emulator accepts for --server-ttl seconds, announcing an
expirationTimestamp --ttl seconds away. With --server-ttl shorter than
--ttl, the server refuses a token the client still believes valid: the
client must run the plugin again after the 401, as client-go does.

usage: kube_exec_plugin.py --key-file F [--user U] [--ttl S] [--server-ttl S]
                           [--count-file F] [--fail MESSAGE] [--api-version V]

The token is kx1.USER.EXPIRES.MINTED_MS.MAC, MAC an HMAC-SHA256 with the
emulator's key. Each run appends a line to --count-file. Read from
client-go plugin/pkg/client/auth/exec/exec.go: KUBERNETES_EXEC_INFO holds the
requested apiVersion, and the answer must carry the same one.
"""
import argparse
import datetime
import hashlib
import hmac
import json
import os
import sys
import time

API_VERSION = "client.authentication.k8s.io/v1"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--key-file", required=True)
    p.add_argument("--user", default="exec-user")
    p.add_argument("--ttl", type=float, default=300.0)
    p.add_argument("--server-ttl", type=float, default=None)
    p.add_argument("--count-file", default=None)
    p.add_argument("--fail", default=None, help="exit 1 with this message on stderr")
    p.add_argument("--api-version", default=API_VERSION)
    a = p.parse_args()
    if a.count_file:
        with open(a.count_file, "a") as f:
            f.write("%f\n" % time.time())
    if a.fail:
        sys.stderr.write(a.fail + "\n")
        return 1
    info = os.environ.get("KUBERNETES_EXEC_INFO")
    if info:
        want = json.loads(info).get("apiVersion")
        if want and want != a.api_version and a.api_version == API_VERSION:
            sys.stderr.write("kube_exec_plugin: asked for %s, only %s is spoken\n" % (want, API_VERSION))
            return 1
    now = time.time()
    expires = now + (a.server_ttl if a.server_ttl is not None else a.ttl)
    body = "%s.%d.%d" % (a.user, int(expires), int(now * 1000))
    key = open(a.key_file).read().encode()
    mac = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]
    stamp = datetime.datetime.fromtimestamp(now + a.ttl, datetime.timezone.utc)
    json.dump({"apiVersion": a.api_version, "kind": "ExecCredential", "spec": {"interactive": False},
               "status": {"token": "kx1.%s.%s" % (body, mac),
                          "expirationTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}},
              sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
