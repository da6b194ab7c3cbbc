"""moto's S3 on loopback with request signatures checked, for the specs
(tests/support/moto.lua starts it).

Runs moto's app (the one `moto_server` serves) on 127.0.0.1 and a free
port, one request at a time: moto checks If-None-Match and writes without a
lock, so two racing creates could both win, where S3 lets exactly one win
(docs/internals.md, Traps we met). Connections are still served by threads. INITIAL_NO_AUTH_ACTION_COUNT lets the first requests in
without credentials: those create two IAM users, each with a policy, its
attachment and an access key: one allowed s3:*, one allowed only to read
(s3:GetObject, s3:ListBucket: what a read-only role grants). Every later
request is signature-checked, and moto enforces the users' policies.

Prints one line, `ready <endpoint> <access key> <secret key> <read-only
access key> <read-only secret key>`, then serves until its stdin closes
(the spec closed it, or died), and exits.

Needs the Python that has moto (the one first on PATH in this image; not
Debian's /usr/bin/python3).
"""
import json
import os
import sys

# the eight setup calls below (four per user) are the only unauthenticated
# requests
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "8"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "setup")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "setup")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

try:
    import threading
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server
except ImportError as e:
    print("error moto (and boto3) are needed for the S3 specs: %s (python %s)"
          % (e, sys.executable), flush=True)
    sys.exit(2)

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "sts:GetSessionToken"], "Resource": "*"}],
}
READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}],
}


# moto checks a signature over the URL as werkzeug decoded it (botocore then
# takes that path and query as canonical): a correctly signed request for
# a key with '+', '$', '%' or non-ASCII bytes, or a query value with '/'
# (list prefix=a/), fails with SignatureDoesNotMatch, boto3's own requests
# too. Our URLs are canonical already, so the check is given the raw
# request target instead. Requests are serialised, so one global suffices.
RAW = {"uri": None}


def check_raw_uri():
    from moto.iam import access_control
    init = access_control.IAMRequestBase.__init__

    def patched(self, account_id, method, path, data, body, headers, action):
        if RAW["uri"]:
            path = RAW["uri"]
        init(self, account_id, method, path, data, body, headers, action)
    access_control.IAMRequestBase.__init__ = patched


def serialised(app):
    lock = threading.Lock()

    def call(environ, start_response):
        with lock:
            RAW["uri"] = environ.get("RAW_URI") or environ.get("REQUEST_URI")
            # the whole answer is produced under the lock
            return [b"".join(app(environ, start_response))]
    return call


def main():
    check_raw_uri()
    app = serialised(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    endpoint = "http://%s:%d" % (host, port)
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")

    def user(name, policy):
        iam.create_user(UserName=name)
        arn = iam.create_policy(PolicyName=name + "-policy",
                                PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return "%s %s" % (key["AccessKeyId"], key["SecretAccessKey"])
    keys = user("geneva", POLICY)
    ro_keys = user("geneva-read-only", READ_ONLY)
    print("ready %s %s %s" % (endpoint, keys, ro_keys), flush=True)
    try:
        sys.stdin.read()   # until EOF: our parent is done (or gone)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
