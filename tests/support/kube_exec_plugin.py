#!/usr/bin/env python3
"""A client.authentication.k8s.io exec credential plugin for the kube specs.

Configured through its environment (the kubeconfig's exec.env):
  PLUGIN_STATE    a directory: `count` (runs so far), `tokens` (the token
                  just issued, one line: give it to kube_stub.py --tokens,
                  so older tokens stop working), `info` (the last
                  KUBERNETES_EXEC_INFO), `argv` (the last arguments, JSON)
  EXPIRES_IN      seconds until the token expires (may be negative); unset:
                  no expirationTimestamp
  MODE            token (default) | cert | fail | badversion | garbage | empty
  CERT_FILE, KEY_FILE   PEM files for MODE=cert
The token is "exec-token-<run number>".
"""
import datetime
import json
import os
import sys

state = os.environ["PLUGIN_STATE"]
count_file = os.path.join(state, "count")
n = int(open(count_file).read()) + 1 if os.path.exists(count_file) else 1
with open(count_file, "w") as f:
    f.write(str(n))
info = os.environ.get("KUBERNETES_EXEC_INFO", "")
with open(os.path.join(state, "info"), "w") as f:
    f.write(info)
with open(os.path.join(state, "argv"), "w") as f:
    json.dump(sys.argv[1:], f)
api = json.loads(info)["apiVersion"] if info else "client.authentication.k8s.io/v1"
mode = os.environ.get("MODE", "token")
if mode == "fail":
    sys.stderr.write("plugin: no credentials here\n")
    sys.exit(3)
if mode == "garbage":
    print("this is not json")
    sys.exit(0)
if mode == "badversion":
    api = "client.authentication.k8s.io/v1alpha1"
status = {}
if mode == "cert":
    status["clientCertificateData"] = open(os.environ["CERT_FILE"]).read()
    status["clientKeyData"] = open(os.environ["KEY_FILE"]).read()
elif mode != "empty":
    token = "exec-token-%d" % n
    status["token"] = token
    with open(os.path.join(state, "tokens"), "w") as f:
        f.write(token + "\n")
if os.environ.get("EXPIRES_IN"):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=float(os.environ["EXPIRES_IN"]))
    status["expirationTimestamp"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({"apiVersion": api, "kind": "ExecCredential", "status": status}))
