#!/usr/bin/env python3
"""An emulator of the Kubernetes API subset a KubeRay client uses, with a
KubeRay-like controller that really brings clusters up: each valid RayCluster
gets a Ray dashboard emulator (ray_dashboard.py) of its own, reached through
the apiserver's service proxy. Python 3 standard library, and the openssl CLI
for the test certificates.

usage: kube_apiserver.py [--port N] [--state-dir DIR] [--plain-http]
                         [--ready-delay S] [--head-ready-lag S] [--stale-status S]
                         [--dashboard-lag S] [--gc-delay S]
                         [--admin-token T] [--token T:USER[:GROUP,...]]...
                         [--token-auth-file CSV] [--anonymous-auth]
                         [--exec-ttl S] [--exec-server-ttl S]
                         [--kuberay-version X.Y.Z] [--namespace NS]...
                         [--dashboard-arg ARG]... [--max-life S] [--ignore-stdin]

It listens on 127.0.0.1 (TLS unless --plain-http), writes STATE/kubeconfig
and the certificates, prints "listening https://127.0.0.1:PORT" as its first
line, and exits when its stdin closes, on SIGTERM/SIGINT, or after --max-life
seconds, stopping every dashboard emulator it started (they also exit on
their own when we die: their stdin is a pipe of ours). tests/fakes/README.md
describes what is emulated and what is not.

Built from a reading of (no code copied):
  kubernetes/apimachinery pkg/api/errors/errors.go    Status objects: reasons,
      messages ("rayclusters.ray.io \"x\" not found"), details, causes
  kubernetes/apiserver pkg/endpoints/handlers/delete.go, registry/generic/
      registry/store.go (finalizeDelete)              the delete answer: a
      Success Status with details.uid, or the object while finalizers pend
  kubernetes/apiserver pkg/endpoints/handlers/responsewriters/errors.go
      (forbiddenMessage)                              403 wording
  kubernetes/apiserver pkg/endpoints/filters/authentication.go  401 body;
      Authorization removed before proxying
  kubernetes/apiextensions-apiserver pkg/apiserver/schema/pruning,
      pkg/registry/customresource/tableconvertor      unknown fields dropped
      with a 299 Warning per field; printer columns; "date" cells as ages
  kubernetes/apiserver pkg/storage/cacher              watch: synthetic ADDED
      without a resourceVersion, changes strictly after one, a selector
      crossing turned into ADDED/DELETED, ERROR 410 for a compacted one
  kubernetes/kubernetes pkg/registry/core/service/proxy, staging/.../proxy/
      upgradeaware.go                                 the service proxy, 503
      "no endpoints available for service"
  kubernetes/client-go tools/events (event names "<obj>.<hex ns>",
      reportingInstance "<controller>-<hostname>"), tools/record (legacy)
  ray-project/kuberay ray-operator/ (at feeaf72fa):
      apis/ray/v1/raycluster_types.go                 status fields, condition
          types and reasons, printer columns
      controllers/ray/raycluster_controller.go        rayClusterReconcile's
          validation events, calculateStatus, CreatedService/CreatedHeadPod
          events, the recorder name "raycluster-controller"
      controllers/ray/utils/validation.go             ValidateRayClusterMetadata,
          ValidateRayClusterSpec (the parts emulated are listed in
          validate_spec)
      controllers/ray/utils/util.go                   GenerateHeadServiceName,
          CheckName, Calculate{Desired,Min,Max}Replicas, CalculateDesiredResources
      controllers/ray/common/pod.go                   num-cpus/memory/num-gpus
          from the container's limits when rayStartParams lacks them
      controllers/ray/common/service.go               head service ports
      config/crd/bases/ray.io_rayclusters.yaml        the structural schema
          (raycluster_schema.json, made by gen_raycluster_schema.py)
"""
import argparse
import base64
import csv
import datetime
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
RAY_DASHBOARD = os.path.join(HERE, "ray_dashboard.py")
EXEC_PLUGIN = os.path.join(HERE, "kube_exec_plugin.py")
SCHEMA_FILE = os.path.join(HERE, "raycluster_schema.json")

K8S_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.4",
               "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335", "gitTreeState": "clean",
               "buildDate": "2025-04-22T16:02:27Z", "goVersion": "go1.23.6", "compiler": "gc",
               "platform": "linux/amd64"}
MAX_RAYCLUSTER_NAME = 53           # utils.MaxRayClusterNameLength
CONTROLLER = "raycluster-controller"  # mgr.GetEventRecorder("raycluster-controller")
MASTERS = "system:masters"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
               "start with an alphabetic character, and end with an alphanumeric character "
               "(e.g. 'my-name',  or 'abc-123', regex used for validation is "
               "'[a-z]([-a-z0-9]*[a-z0-9])?')")
DNS1123_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
               "characters, '-' or '.', and must start and end with an alphanumeric character "
               "(e.g. 'example.com', regex used for validation is "
               "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
# ObjectMeta's fields: the apiserver prunes metadata itself (not the CRD schema)
OBJECT_META = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
               "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
               "finalizers", "managedFields"}
SERVER_SET_META = ("uid", "resourceVersion", "generation", "creationTimestamp",
                   "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")
# the names generateName appends (apiserver/pkg/storage/names, utilrand alphanums)
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
# KubeRay's default head service ports when the container declares none
DEFAULT_HEAD_PORTS = [("client", 10001), ("gcs-server", 6379), ("dashboard", 8265),
                      ("metrics", 8080), ("serve", 8000)]


# --------------------------------------------------------------------------
# small helpers

def rfc3339(t=None):
    return datetime.datetime.fromtimestamp(time.time() if t is None else t,
                                           datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t=None):
    return datetime.datetime.fromtimestamp(time.time() if t is None else t,
                                           datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s):
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def human_age(s):
    """apimachinery duration.HumanDuration of the time since s (kubectl's AGE)."""
    t = parse_time(s)
    if t is None:
        return None
    d = max(0, int(time.time() - t))
    if d < 120:
        return "%ds" % d
    if d < 600:
        return "%dm%ds" % (d // 60, d % 60) if d % 60 else "%dm" % (d // 60)
    if d < 3 * 3600:
        return "%dm" % (d // 60)
    return "%dh" % (d // 3600)


def rand_suffix(n=5):
    return "".join(random.choice(NAME_CHARS) for _ in range(n))


def deep_copy(o):
    return json.loads(json.dumps(o))


def check_name(s):
    """KubeRay utils.CheckName: at most 50 characters (the tail), no leading digit."""
    if len(s) > 50:
        s = s[len(s) - 50:]
    if s and not s[0].isalpha():
        s = "r" + s[1:]
    return s


# --------------------------------------------------------------------------
# Status objects (apimachinery pkg/api/errors)

class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=()):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers = details, list(headers)

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason}
        if self.details is not None:
            s["details"] = self.details
        s["code"] = self.code
        return s


class Resource:
    """A resource as the errors name it: group, plural, and the kind."""
    def __init__(self, group, plural, kind, api_version):
        self.group, self.plural, self.kind, self.api_version = group, plural, kind, api_version

    def qualified(self):
        return self.plural + ("." + self.group if self.group else "")


RAYCLUSTERS = Resource("ray.io", "rayclusters", "RayCluster", "ray.io/v1")
EVENTS = Resource("", "events", "Event", "v1")
SERVICES = Resource("", "services", "Service", "v1")
SECRETS = Resource("", "secrets", "Secret", "v1")
NAMESPACES = Resource("", "namespaces", "Namespace", "v1")
PODS = Resource("", "pods", "Pod", "v1")


def not_found(res, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (res.qualified(), name),
                    {"name": name, "group": res.group, "kind": res.plural} if res.group
                    else {"name": name, "kind": res.plural})


def already_exists(res, name):
    d = {"name": name, "kind": res.plural}
    if res.group:
        d["group"] = res.group
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (res.qualified(), name), d)


def invalid(res, name, causes):
    """422 Invalid (errors.NewInvalid): causes are (reason, field, text)."""
    texts = ["%s: %s" % (f, t) for _, f, t in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    kind = res.kind + ("." + res.group if res.group else "")
    d = {"name": name, "kind": res.kind,
         "causes": [{"reason": r, "message": t, "field": f} for r, f, t in causes]}
    if res.group:
        d["group"] = res.group
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (kind, name, joined), d)


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource")


def forbidden(user, verb, res, sub, name, ns, path):
    """responsewriters.Forbidden with forbiddenMessage's wording."""
    if res is None:
        msg = 'forbidden: User "%s" cannot %s path "%s"' % (user, verb, path)
        return ApiError(403, "Forbidden", msg, {})
    resource = res.plural + ("/" + sub if sub else "")
    why = 'User "%s" cannot %s resource "%s" in API group "%s"' % (user, verb, resource, res.group)
    if ns:
        why += ' in the namespace "%s"' % ns
    if name:
        msg = '%s "%s" is forbidden: %s' % (res.qualified(), name, why)
    else:
        msg = "%s is forbidden: %s" % (res.qualified(), why)
    d = {"kind": res.plural}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    return ApiError(403, "Forbidden", msg, d)


def unauthorized():
    return ApiError(401, "Unauthorized", "Unauthorized")


def unavailable(message):
    return ApiError(503, "ServiceUnavailable", message)


# --------------------------------------------------------------------------
# quantities (apimachinery resource.Quantity, the part status needs)

SUFFIX = {"": 1, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(v):
    if isinstance(v, (int, float)):
        return float(v)
    m = re.match(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$", str(v).strip())
    if not m or m.group(2) not in SUFFIX:
        return 0.0
    return float(m.group(1)) * SUFFIX[m.group(2)]


def format_cpu(cores):
    milli = int(round(cores * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else "%dm" % milli


def format_bytes(n):
    n = int(round(n))
    if n == 0:
        return "0"
    for suf in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        if n % SUFFIX[suf] == 0:
            return "%d%s" % (n // SUFFIX[suf], suf)
    return str(n)


# --------------------------------------------------------------------------
# selectors (apimachinery pkg/labels, pkg/fields)

def split_top(s):
    """Splits on commas outside parentheses: "a in (x,y),b" -> two terms."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [t.strip() for t in out if t.strip()]


def parse_label_selector(s):
    """-> [(key, op, values)]; op is =, !=, in, notin, exists, !exists."""
    reqs = []
    for term in split_top(s or ""):
        m = re.match(r"^([A-Za-z0-9_./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if m:
            vals = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.match(r"^([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)$", term)
        if m:
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", {m.group(3)}))
            continue
        m = re.match(r"^(!?)\s*([A-Za-z0-9_./-]+)$", term)
        if m:
            reqs.append((m.group(2), "!exists" if m.group(1) else "exists", set()))
            continue
        raise bad_request("unable to parse requirement: found '%s', expected: identifier" % term)
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        have = key in labels
        v = labels.get(key)
        if op == "=" and (not have or v not in vals):
            return False
        if op == "!=" and have and v in vals:
            return False
        if op == "in" and (not have or v not in vals):
            return False
        if op == "notin" and have and v in vals:
            return False
        if op == "exists" and not have:
            return False
        if op == "!exists" and have:
            return False
    return True


def parse_field_selector(s, allowed):
    reqs = []
    for term in split_top(s or ""):
        m = re.match(r"^([A-Za-z.]+)\s*(==|!=|=)\s*(.*)$", term)
        if not m:
            raise bad_request('invalid selector: \'%s\'; can\'t understand \'%s\'' % (s, term))
        if m.group(1) not in allowed:
            raise bad_request('"%s" is not a known field selector: only "%s"'
                              % (m.group(1), '", "'.join(sorted(allowed))))
        reqs.append((m.group(1), m.group(2) == "!=", m.group(3)))
    return reqs


def field_value(obj, path):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def fields_match(reqs, obj):
    return all((field_value(obj, k) != v) if neg else (field_value(obj, k) == v)
               for k, neg, v in reqs)


# fields each resource can be selected on (CRDs: metadata.name/namespace only;
# events: pkg/registry/core/event/strategy.go ToSelectableFields)
FIELDS = {
    "rayclusters": {"metadata.name", "metadata.namespace"},
    "events": {"metadata.name", "metadata.namespace", "involvedObject.kind",
               "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    "services": {"metadata.name", "metadata.namespace"},
    "secrets": {"metadata.name", "metadata.namespace", "type"},
}


# --------------------------------------------------------------------------
# the CRD's structural schema: pruning and validation
# (apiextensions-apiserver pkg/apiserver/schema/pruning, .../validation)

class Schema:
    def __init__(self, path):
        with open(path) as f:
            doc = json.load(f)
        self.root = doc["schema"]
        self.defs = doc["defs"]
        self.printer_columns = doc["printerColumns"]

    def node(self, n):
        while isinstance(n, dict) and "$ref" in n:
            n = self.defs[n["$ref"]]
        return n

    def check(self, obj):
        """Prunes obj in place; -> (unknown field paths, 422 causes)."""
        unknown, causes = [], []
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            for k in list(meta):
                if k not in OBJECT_META:
                    unknown.append("metadata." + k)
                    del meta[k]
        for k in list(obj):
            if k in ("apiVersion", "kind", "metadata"):
                continue
            sub = self.root["properties"].get(k)
            if sub is None:
                unknown.append(k)
                del obj[k]
                continue
            obj[k] = self.walk(obj[k], self.node(sub), k, unknown, causes)
        return unknown, causes

    def walk(self, v, n, path, unknown, causes):
        if v is None:
            if not n.get("nullable"):
                # a null is dropped by pruning/defaulting for non-nullable fields
                return None
            return v
        if n.get("x-kubernetes-int-or-string"):
            if not isinstance(v, (int, str)) or isinstance(v, bool):
                causes.append(("FieldValueTypeInvalid", path,
                               'Invalid value: "%s": %s in body must be of type int-or-string: "%s"'
                               % (json_type(v), path, json_type(v))))
            return v
        t = n.get("type")
        if t and not type_ok(v, t):
            causes.append(("FieldValueTypeInvalid", path,
                           'Invalid value: "%s": %s in body must be of type %s: "%s"'
                           % (json_type(v), path, t, json_type(v))))
            return v
        if "enum" in n and v not in n["enum"]:
            causes.append(("FieldValueNotSupported", path,
                           'Unsupported value: %s: supported values: %s'
                           % (json.dumps(v), ", ".join(json.dumps(e) for e in n["enum"]))))
        if t == "object":
            props = n.get("properties")
            addl = n.get("additionalProperties")
            for k in list(v):
                sub = (props or {}).get(k)
                child = path + "." + k
                if sub is not None:
                    r = self.walk(v[k], self.node(sub), child, unknown, causes)
                    if r is None and v[k] is None:
                        del v[k]
                    else:
                        v[k] = r
                elif isinstance(addl, dict):
                    v[k] = self.walk(v[k], self.node(addl), child, unknown, causes)
                elif addl is True or n.get("x-kubernetes-preserve-unknown-fields"):
                    continue
                elif props is not None or addl is False:
                    unknown.append(child)
                    del v[k]
            for req in n.get("required", []):
                if req not in v:
                    causes.append(("FieldValueRequired", path + "." + req, "Required value"))
        elif t == "array" and "items" in n:
            item = self.node(n["items"])
            v[:] = [self.walk(x, item, "%s[%d]" % (path, i), unknown, causes)
                    for i, x in enumerate(v)]
        return v


def json_type(v):
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else "null"


def type_ok(v, t):
    jt = json_type(v)
    if t == "number":
        return jt in ("integer", "number")
    if t == "integer" and jt == "number":
        return float(v).is_integer()
    return jt == t


# --------------------------------------------------------------------------
# the store: objects, resourceVersions, and the change log watches read

class Store:
    LOG_SIZE = 2000

    def __init__(self):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 100          # resourceVersions are opaque; ours count up
        self.objects = {}      # (plural, ns, name) -> obj
        self.log = deque()     # (rv, type, plural, obj, old)
        self.oldest = 100      # watches from before this rv get 410
        self.closing = False

    def _bump(self):
        self.rv += 1
        return str(self.rv)

    def _record(self, typ, plural, obj, old):
        self.log.append((int(obj["metadata"]["resourceVersion"]), typ, plural,
                         deep_copy(obj), deep_copy(old) if old else None))
        while len(self.log) > self.LOG_SIZE:
            self.oldest = self.log.popleft()[0]
        self.cond.notify_all()

    def get(self, plural, ns, name):
        with self.lock:
            o = self.objects.get((plural, ns, name))
            return deep_copy(o) if o else None

    def list(self, plural, ns=None):
        with self.lock:
            items = [deep_copy(o) for (p, n, _), o in sorted(self.objects.items())
                     if p == plural and (ns is None or n == ns)]
            return items, str(self.rv)

    def create(self, plural, obj):
        with self.lock:
            m = obj["metadata"]
            m["resourceVersion"] = self._bump()
            self.objects[(plural, m.get("namespace"), m["name"])] = obj
            self._record("ADDED", plural, obj, None)
            return deep_copy(obj)

    def update(self, plural, ns, name, mutate):
        """mutate(obj) changes a copy in place; -> the stored copy or None."""
        with self.lock:
            cur = self.objects.get((plural, ns, name))
            if cur is None:
                return None
            new = deep_copy(cur)
            if mutate(new) is False:
                return deep_copy(cur)
            new["metadata"]["resourceVersion"] = self._bump()
            self.objects[(plural, ns, name)] = new
            self._record("MODIFIED", plural, new, cur)
            return deep_copy(new)

    def delete(self, plural, ns, name):
        with self.lock:
            cur = self.objects.pop((plural, ns, name), None)
            if cur is None:
                return None
            cur = deep_copy(cur)
            # the DELETED event carries the last state at a new resourceVersion
            cur["metadata"]["resourceVersion"] = self._bump()
            self._record("DELETED", plural, cur, cur)
            return cur

    def compact(self):
        with self.lock:
            self.log.clear()
            self.oldest = self.rv
            self.cond.notify_all()


# --------------------------------------------------------------------------
# authentication and authorization

class Auth:
    """Static tokens (--token, --token-auth-file), exec-plugin tokens signed
    with a key the plugin reads, client certificates (CN = user, O = groups),
    and a tiny authorizer: system:masters may do anything, the viewer group
    get/list/watch, anybody else nothing; /_emulator/policy adds denials."""

    def __init__(self, args, state_dir):
        self.tokens = {}         # token -> (user, groups, expires or None)
        self.deny = []           # [{user, verb, resource}]
        self.exec_not_before = 0.0
        self.exec_key_file = os.path.join(state_dir, "exec-plugin.key")
        self.exec_count_file = os.path.join(state_dir, "exec-plugin.runs")
        with open(self.exec_key_file, "w") as f:
            f.write(secrets.token_hex(32))
        os.chmod(self.exec_key_file, 0o600)
        self.exec_key = open(self.exec_key_file).read().encode()
        self.admin_token = args.admin_token or "admin-" + secrets.token_hex(16)
        self.viewer_token = "viewer-" + secrets.token_hex(16)
        self.nobody_token = "nobody-" + secrets.token_hex(16)
        self.tokens[self.admin_token] = ("admin", [MASTERS, "system:authenticated"], None)
        self.tokens[self.viewer_token] = ("viewer", ["viewers", "system:authenticated"], None)
        self.tokens[self.nobody_token] = ("nobody", ["system:authenticated"], None)
        for spec in args.token:
            tok, _, rest = spec.partition(":")
            user, _, groups = rest.partition(":")
            self.tokens[tok] = (user or tok, [g for g in groups.split(",") if g]
                                + ["system:authenticated"], None)
        if args.token_auth_file:
            # kube-apiserver --token-auth-file: token,user,uid,"group1,group2"
            with open(args.token_auth_file) as f:
                for row in csv.reader(f):
                    if len(row) >= 2 and not row[0].startswith("#"):
                        groups = row[3].split(",") if len(row) > 3 else []
                        self.tokens[row[0]] = (row[1], groups + ["system:authenticated"], None)
        self.anonymous = args.anonymous_auth

    def mint(self, user, groups, ttl):
        tok = "minted-" + secrets.token_hex(16)
        self.tokens[tok] = (user, list(groups) + ["system:authenticated"],
                            time.time() + ttl if ttl is not None else None)
        return tok

    def exec_token_user(self, tok):
        """kube_exec_plugin.py's tokens: kx1.USER.EXPIRES.MINTED_MS.MAC"""
        parts = tok.split(".")
        if len(parts) != 5 or parts[0] != "kx1":
            return None
        mac = hmac.new(self.exec_key, ".".join(parts[1:4]).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac[:32], parts[4]):
            return None
        try:
            expires, minted = float(parts[2]), float(parts[3]) / 1000
        except ValueError:
            return None
        if time.time() >= expires or minted < self.exec_not_before:
            return None
        return (parts[1], [MASTERS, "system:authenticated"])

    def authenticate(self, handler):
        """-> (user, groups); raises 401 for bad credentials."""
        h = handler.headers.get("Authorization")
        if h is not None:
            if not h.startswith("Bearer ") or not h[7:].strip():
                raise unauthorized()
            tok = h[7:].strip()
            ent = self.tokens.get(tok)
            if ent and (ent[2] is None or time.time() < ent[2]):
                return ent[0], ent[1]
            who = self.exec_token_user(tok)
            if who:
                return who
            raise unauthorized()
        cert = handler.peer_identity()
        if cert:
            return cert
        if self.anonymous:
            return "system:anonymous", ["system:unauthenticated"]
        raise unauthorized()

    def allowed(self, user, groups, verb, resource):
        for d in self.deny:
            if d.get("user") in (user, "*") and d.get("verb") in (verb, "*") \
                    and d.get("resource") in (resource, "*"):
                return False
        if MASTERS in groups:
            return True
        if "viewers" in groups:
            return verb in ("get", "list", "watch") and resource != "services/proxy"
        return False

    def exec_runs(self):
        try:
            with open(self.exec_count_file) as f:
                return sum(1 for _ in f)
        except OSError:
            return 0


# --------------------------------------------------------------------------
# the controller: a Ray dashboard emulator per valid RayCluster

class Dashboard:
    """One ray_dashboard.py process: the cluster's head (and, as capacity,
    its workers). Its stdin is a pipe of ours, so it exits when we do."""

    def __init__(self, key, state_dir, node_resources, ray_version, auth_token, extra, max_life):
        self.key = key
        self.dir = state_dir
        os.makedirs(self.dir, exist_ok=True)
        argv = [sys.executable, RAY_DASHBOARD, "--state-dir", self.dir,
                "--node-resources", json.dumps(node_resources), "--max-life", str(max_life)]
        if ray_version:
            argv += ["--ray-version", ray_version]
        if auth_token:
            argv += ["--auth-token", auth_token]
        argv += list(extra)
        self.err = open(os.path.join(self.dir, "dashboard.err"), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, close_fds=True)
        self.pid = self.proc.pid
        self.url = None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening http://"):
            self.stop()
            raise RuntimeError("the dashboard emulator did not start: %r" % line)
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Closes its stdin (it then kills its jobs and exits); SIGKILL after 10 s."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def group_resources(group):
    """The Ray resources of one pod: rayStartParams first, else the Ray
    container's limits (then requests), as common/pod.go generateRayStartCommand."""
    params = group.get("rayStartParams") or {}
    containers = (((group.get("template") or {}).get("spec") or {}).get("containers") or [{}])
    res = containers[0].get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}

    def pick(param, key):
        if param in params:
            return parse_quantity(params[param])
        return parse_quantity(limits.get(key) or requests.get(key) or 0)
    out = {"CPU": float(int(pick("num-cpus", "cpu"))),
           "GPU": float(int(pick("num-gpus", "nvidia.com/gpu")))}
    mem = pick("memory", "memory")
    if mem:
        out["memory"] = mem
    return out


def pod_requests(group):
    """utils.CalculatePodResource: the sum of the containers' requests (a
    limit stands for a missing request, as the apiserver defaults it)."""
    total = {}
    spec = (group.get("template") or {}).get("spec") or {}
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        merged = dict(res.get("limits") or {})
        merged.update(res.get("requests") or {})
        for k, v in merged.items():
            total[k] = total.get(k, 0.0) + parse_quantity(v)
    return total


def desired_replicas(g):
    """utils.GetWorkerGroupDesiredReplicas."""
    if g.get("suspend"):
        return 0
    lo = g.get("minReplicas") or 0
    hi = g.get("maxReplicas", 2147483647)
    r = g.get("replicas")
    r = lo if r is None or r < lo else min(r, hi)
    return r * (g.get("numOfHosts") or 1)


def validate_metadata(meta):
    """utils.ValidateRayClusterMetadata."""
    name = meta.get("name", "")
    if len(name) > MAX_RAYCLUSTER_NAME:
        return "RayCluster name should be no more than %d characters" % MAX_RAYCLUSTER_NAME
    if not DNS1035.match(name) or len(name) > 63:
        return "RayCluster name should be a valid DNS1035 label: [%s]" % DNS1035_MSG
    return None


def autoscaling(spec):
    return bool(spec.get("enableInTreeAutoscaling"))


def validate_spec(spec):
    """utils.ValidateRayClusterSpec, the checks a client can trip on: head and
    worker containers, min/max replicas, resources given twice, labels in
    rayStartParams, token auth's Ray version. (Redis/GCS FT, autoscaler v2,
    history server, network policy and TLS checks are not emulated.)"""
    head = spec.get("headGroupSpec") or {}
    if not (((head.get("template") or {}).get("spec") or {}).get("containers")):
        return "headGroupSpec should have at least one container"
    err = group_checks("Head", head)
    if err:
        return err
    for g in spec.get("workerGroupSpecs") or []:
        name = g.get("groupName", "")
        if not (((g.get("template") or {}).get("spec") or {}).get("containers")):
            return "workerGroupSpec should have at least one container"
        lo, hi = g.get("minReplicas"), g.get("maxReplicas")
        if not autoscaling(spec) and (lo is None or hi is None):
            return ("worker group %s must set both minReplicas and maxReplicas when "
                    "autoscaling is disabled" % name)
        if lo is not None and lo < 0:
            return "worker group %s has negative minReplicas %d" % (name, lo)
        if hi is not None and hi < 0:
            return "worker group %s has negative maxReplicas %d" % (name, hi)
        if lo is not None and hi is not None and lo > hi:
            return "worker group %s has minReplicas %d greater than maxReplicas %d" % (name, lo, hi)
        err = group_checks(name, g)
        if err:
            return err
    auth = spec.get("authOptions") or {}
    if auth.get("mode") == "token":
        v = spec.get("rayVersion", "")
        if not v:
            return ("authOptions.mode is 'token' but RayVersion was not specified. "
                    "Ray version 2.52.0 or later is required")
        nums = re.findall(r"\d+", v)[:3]
        if len(nums) < 2:
            return "authOptions.mode is 'token' but RayVersion format is invalid: %s" % v
        if tuple(int(x) for x in nums + ["0"] * (3 - len(nums))) < (2, 52, 0):
            return "authOptions.mode is 'token' but minimum Ray version is 2.52.0, got %s" % v
    return None


def group_checks(group_name, g):
    params = g.get("rayStartParams") or {}
    if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) \
            and g.get("resources"):
        return ("resource fields should not be set in both rayStartParams and Resources for "
                "%s group; please use only one" % group_name)
    if "labels" in params:
        return ("rayStartParams['labels'] is not supported for %s group; please use the "
                "top-level Labels field instead" % group_name)
    return None


class Controller:
    """rayClusterReconcile, reduced to what a client sees: validation events,
    the head service (and auth Secret), pods that become ready after
    --ready-delay (a dashboard emulator), and status as calculateStatus
    writes it."""

    def __init__(self, server):
        self.server = server
        self.store = server.store
        self.args = server.args
        self.lock = threading.RLock()
        self.dashboards = {}     # (ns, name, uid) -> Dashboard
        self.orphans = []        # dashboards left by an Orphan delete
        self.stopped = []        # (key, pid) of dashboards stopped
        self.ip_seq = 10
        self.wake = threading.Event()
        self.ready = set()       # uids whose status says ready in every way

    # -- events (client-go tools/events, or tools/record before KubeRay 1.7)

    def record(self, obj, typ, reason, action, message):
        m = obj["metadata"]
        now = time.time()
        ev = {"kind": "Event", "apiVersion": "v1",
              "metadata": {"name": "%s.%x" % (m["name"], time.time_ns()),
                           "namespace": m["namespace"], "uid": new_uid(),
                           "creationTimestamp": rfc3339(now)},
              "involvedObject": {"kind": obj.get("kind", "RayCluster"),
                                 "namespace": m["namespace"], "name": m["name"],
                                 "uid": m.get("uid"), "apiVersion": obj.get("apiVersion", "ray.io/v1"),
                                 "resourceVersion": m.get("resourceVersion")},
              "reason": reason, "message": message, "type": typ}
        if self.server.legacy_events:
            ev.update({"source": {"component": CONTROLLER}, "firstTimestamp": rfc3339(now),
                       "lastTimestamp": rfc3339(now), "count": 1, "eventTime": None,
                       "reportingComponent": CONTROLLER, "reportingInstance": ""})
        else:
            ev.update({"source": {}, "firstTimestamp": None, "lastTimestamp": None,
                       "eventTime": micro_time(now), "action": action,
                       "reportingComponent": CONTROLLER,
                       "reportingInstance": CONTROLLER + "-" + socket.gethostname()})
        self.store.create("events", ev)

    # -- reconcile

    def added(self, obj):
        threading.Thread(target=self.reconcile, args=(obj,), daemon=True,
                         name="reconcile-" + obj["metadata"]["name"]).start()

    def current(self, key):
        ns, name, uid = key
        o = self.store.get("rayclusters", ns, name)
        return o if o and o["metadata"]["uid"] == uid and \
            not o["metadata"].get("deletionTimestamp") else None

    def reconcile(self, obj):
        m = obj["metadata"]
        key = (m["namespace"], m["name"], m["uid"])
        err = validate_metadata(m)
        if err:
            self.record(obj, "Warning", "InvalidRayClusterMetadata", "Validate",
                        "The RayCluster metadata is invalid %s/%s: %s" % (key[0], key[1], err))
            return
        spec = obj.get("spec") or {}
        err = validate_spec(spec)
        if err:
            self.record(obj, "Warning", "InvalidRayClusterSpec", "Validate",
                        "The RayCluster spec is invalid %s/%s: %s" % (key[0], key[1], err))
            return
        svc = self.make_service(obj)
        token = self.make_secret(obj)
        self.record(obj, "Normal", "CreatedService", "Create",
                    "Created service %s/%s" % (key[0], svc["metadata"]["name"]))
        head_pod = "%s-head-%s" % (m["name"], rand_suffix())
        self.record(obj, "Normal", "CreatedHeadPod", "Create",
                    "Created head Pod %s/%s" % (key[0], head_pod))
        for g in spec.get("workerGroupSpecs") or []:
            for _ in range(desired_replicas(g)):
                self.record(obj, "Normal", "CreatedWorkerPod", "Create", "Created worker Pod %s/%s-%s-worker-%s"
                            % (key[0], m["name"], g.get("groupName", ""), rand_suffix()))
        with self.lock:
            self.ip_seq += 1
            ip = "10.244.0.%d" % (self.ip_seq % 250 + 2)
        self.set_status(key, spec, svc, head_pod, None, ready=False)
        if not self.sleep_unless_gone(key, self.server.ready_delay):
            return
        # --head-ready-lag: state ready while the head pod is not (a restart
        # after the first ready: KubeRay keeps state "ready")
        if self.server.head_ready_lag > 0:
            self.set_status(key, spec, svc, head_pod, ip, ready=True, head_ready=False)
            if not self.sleep_unless_gone(key, self.server.head_ready_lag):
                return
        # --stale-status: a ready status written for an earlier generation
        if self.server.stale_status > 0:
            self.set_status(key, spec, svc, head_pod, ip, ready=True, generation_lag=1)
            if not self.sleep_unless_gone(key, self.server.stale_status):
                return
        # the pods are Running and Ready: state ready, HeadPodReady True
        self.set_status(key, spec, svc, head_pod, ip, ready=True)
        with self.lock:
            self.ready.add(key[2])
        # the dashboard may answer a little after the pod turns Ready
        if not self.sleep_unless_gone(key, self.server.dashboard_lag):
            return
        self.start_dashboard(key, obj, token)

    def sleep_unless_gone(self, key, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.current(key) is None or self.server.closing:
                return False
            time.sleep(min(0.05, max(0, deadline - time.monotonic())))
        return self.current(key) is not None and not self.server.closing

    def start_dashboard(self, key, obj, token):
        spec = obj.get("spec") or {}
        nodes = [group_resources(spec.get("headGroupSpec") or {})]
        for g in spec.get("workerGroupSpecs") or []:
            nodes += [group_resources(g)] * desired_replicas(g)
        version = spec.get("rayVersion") or None
        if version and not re.match(r"^\d+\.\d+(\.\d+)?", version):
            version = None
        d = os.path.join(self.server.state_dir, "clusters",
                         "%s-%s-%s" % (key[0], key[1], key[2][:8]))
        try:
            dash = Dashboard(key, d, nodes, version, token, self.server.dashboard_args,
                             self.args.max_life)
        except (OSError, RuntimeError) as e:
            o = self.current(key)
            if o:
                self.record(o, "Warning", "FailedToCreateHeadPod", "Create",
                            "Failed to create head Pod %s/%s, %s" % (key[0], key[1], e))
            return
        with self.lock:
            gone = self.current(key) is None or self.server.closing
            if not gone:
                self.dashboards[key] = dash
        if gone:       # deleted while it started: nothing may outlive the cluster
            dash.stop()
            self.stopped.append((list(key), dash.pid))

    def make_service(self, obj):
        """common/service.go BuildServiceForHeadPod: ports copied by name
        from the head container (defaults when it declares none), metrics
        always; ClusterIP made headless."""
        m = obj["metadata"]
        head = obj["spec"].get("headGroupSpec") or {}
        name = ((head.get("headService") or {}).get("metadata") or {}).get("name") \
            or "%s-head-svc" % m["name"]
        c0 = head["template"]["spec"]["containers"][0]
        ports = [(p.get("name") or "%d-port" % p.get("containerPort", 0), p.get("containerPort"))
                 for p in c0.get("ports") or []]
        if not ports:
            ports = list(DEFAULT_HEAD_PORTS)
        if "metrics" not in [p for p, _ in ports]:
            ports.append(("metrics", 8080))
        svc = {"kind": "Service", "apiVersion": "v1",
               "metadata": {"name": name, "namespace": m["namespace"], "uid": new_uid(),
                            "creationTimestamp": rfc3339(),
                            "labels": {"ray.io/cluster": m["name"], "ray.io/node-type": "head",
                                       "ray.io/identifier": m["name"] + "-head",
                                       "app.kubernetes.io/name": "kuberay",
                                       "app.kubernetes.io/created-by": "kuberay-operator"},
                            "ownerReferences": [owner_ref(obj)]},
               "spec": {"type": head.get("serviceType") or "ClusterIP", "clusterIP": "None",
                        "clusterIPs": ["None"], "publishNotReadyAddresses": True,
                        "selector": {"ray.io/cluster": m["name"], "ray.io/node-type": "head"},
                        "ports": [{"name": n, "protocol": "TCP", "port": p, "targetPort": p}
                                  for n, p in ports]},
               "status": {"loadBalancer": {}}}
        if not self.store.get("services", m["namespace"], name):
            self.store.create("services", svc)
        return svc

    def make_secret(self, obj):
        """B.6: with authOptions.mode token, a Secret named after the
        cluster holding auth_token (unless authOptions.secretName)."""
        spec = obj["spec"]
        auth = spec.get("authOptions") or {}
        if auth.get("mode") != "token":
            return None
        m = obj["metadata"]
        if auth.get("secretName"):
            s = self.store.get("secrets", m["namespace"], auth["secretName"])
            tok = (s or {}).get("data", {}).get("auth_token")
            return base64.b64decode(tok).decode() if tok else None
        name = check_name(m["name"])
        s = self.store.get("secrets", m["namespace"], name)
        if s:
            return base64.b64decode(s["data"]["auth_token"]).decode()
        tok = secrets.token_urlsafe(32)
        self.store.create("secrets", {
            "kind": "Secret", "apiVersion": "v1", "type": "Opaque",
            "metadata": {"name": name, "namespace": m["namespace"], "uid": new_uid(),
                         "creationTimestamp": rfc3339(), "ownerReferences": [owner_ref(obj)],
                         "labels": {"ray.io/cluster": m["name"]}},
            "data": {"auth_token": base64.b64encode(tok.encode()).decode()}})
        return tok

    def set_status(self, key, spec, svc, head_pod, ip, ready, head_ready=None, generation_lag=0):
        """calculateStatus, updateEndpoints and updateHeadInfo. head_ready:
        HeadPodReady (default: as ready); generation_lag: observedGeneration
        that many generations behind metadata.generation."""
        if head_ready is None:
            head_ready = ready
        now = rfc3339()
        workers = spec.get("workerGroupSpecs") or []
        desired = sum(desired_replicas(g) for g in workers)
        totals = dict(pod_requests(spec.get("headGroupSpec") or {}))
        for g in workers:
            if g.get("suspend"):
                continue
            n = (g.get("replicas") or 0) * (g.get("numOfHosts") or 1)
            for k, v in pod_requests(g).items():
                totals[k] = totals.get(k, 0.0) + v * n

        def mutate(o):
            st = o.setdefault("status", {})
            conds = {c["type"]: c for c in st.get("conditions", [])}

            def cond(typ, status, reason, message=""):
                old = conds.get(typ)
                t = old["lastTransitionTime"] if old and old["status"] == status else now
                conds[typ] = {"type": typ, "status": status, "reason": reason,
                              "message": message, "lastTransitionTime": t,
                              "observedGeneration": observed}
            observed = o["metadata"].get("generation", 1) - generation_lag
            if head_ready:
                cond("HeadPodReady", "True", "HeadPodRunningAndReady")
            else:
                cond("HeadPodReady", "False", "ContainersNotReady",
                     "containers with unready status: [ray-head]")
            if ready:
                cond("RayClusterProvisioned", "True", "AllPodRunningAndReadyFirstTime",
                     "All Ray Pods are ready for the first time")
            else:
                cond("RayClusterProvisioned", "False", "RayClusterPodsProvisioning",
                     "RayCluster Pods are being provisioned for first time")
            cond("RayClusterSuspended", "False", "RayClusterSuspended")
            cond("RayClusterSuspending", "False", "RayClusterSuspending")
            st["conditions"] = [conds[t] for t in ("HeadPodReady", "RayClusterProvisioned",
                                                    "RayClusterSuspended", "RayClusterSuspending")]
            st["observedGeneration"] = observed
            st["readyWorkerReplicas"] = desired if ready else 0
            st["availableWorkerReplicas"] = desired if ready else 0
            st["desiredWorkerReplicas"] = desired
            st["minWorkerReplicas"] = sum((g.get("minReplicas") or 0) * (g.get("numOfHosts") or 1)
                                          for g in workers if not g.get("suspend"))
            st["maxWorkerReplicas"] = min(2147483647, sum(
                g.get("maxReplicas", 2147483647) * (g.get("numOfHosts") or 1)
                for g in workers if not g.get("suspend")))
            st["desiredCPU"] = format_cpu(totals.get("cpu", 0))
            st["desiredMemory"] = format_bytes(totals.get("memory", 0))
            st["desiredGPU"] = format_cpu(sum(v for k, v in totals.items() if k.endswith("/gpu")))
            st["desiredTPU"] = format_cpu(totals.get("google.com/tpu", 0))
            st["endpoints"] = {p["name"]: str(p["targetPort"]) for p in svc["spec"]["ports"]}
            head = {"podName": head_pod, "serviceName": svc["metadata"]["name"]}
            if ip:
                head.update({"podIP": ip, "serviceIP": ip})   # headless: the pod's IP
            st["head"] = head
            st["lastUpdateTime"] = now
            if ready and st.get("state") != "ready":
                st["state"] = "ready"
                st.setdefault("stateTransitionTimes", {})["ready"] = now
            st.pop("reason", None)
        self.store.update("rayclusters", key[0], key[1], mutate)

    # -- deletion (the garbage collector's part)

    def deleted(self, obj, policy):
        """Background/Foreground: dependents go (dashboard, service, secret);
        Orphan: they stay, the dashboard keeps running."""
        m = obj["metadata"]
        key = (m["namespace"], m["name"], m["uid"])
        with self.lock:
            dash = self.dashboards.pop(key, None)
        if policy == "Orphan":
            if dash:
                with self.lock:
                    self.orphans.append(dash)
            return
        if dash:
            dash.stop()
            self.stopped.append((list(key), dash.pid))
        for plural, res in (("services", SERVICES), ("secrets", SECRETS)):
            items, _ = self.store.list(plural, m["namespace"])
            for it in items:
                if any(r.get("uid") == m["uid"] for r in it["metadata"].get("ownerReferences", [])):
                    self.store.delete(plural, m["namespace"], it["metadata"]["name"])

    def dashboard_for_service(self, ns, svc_name):
        """-> (service, dashboard or None); the service may be orphaned."""
        svc = self.store.get("services", ns, svc_name)
        if not svc:
            return None, None
        owner = [r.get("uid") for r in svc["metadata"].get("ownerReferences", [])]
        with self.lock:
            for key, d in self.dashboards.items():
                if key[0] == ns and key[2] in owner:
                    return svc, d
            for d in self.orphans:
                if d.key[0] == ns and d.key[2] in owner:
                    return svc, d
        return svc, None

    def shutdown(self):
        with self.lock:
            dashes = list(self.dashboards.values()) + list(self.orphans)
            self.dashboards.clear()
            self.orphans = []
        threads = [threading.Thread(target=d.stop) for d in dashes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def owner_ref(obj):
    m = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", "ray.io/v1"), "kind": obj.get("kind", "RayCluster"),
            "name": m["name"], "uid": m["uid"], "controller": True, "blockOwnerDeletion": True}


def new_uid():
    import uuid
    return str(uuid.uuid4())


# --------------------------------------------------------------------------
# discovery (what kubectl's discovery client reads when the server does not
# answer the aggregated form: /api, /apis, then each group version)

def api_resources(server):
    core = [
        {"name": "events", "singularName": "event", "namespaced": True, "kind": "Event",
         "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
         "shortNames": ["ev"]},
        {"name": "namespaces", "singularName": "namespace", "namespaced": False,
         "kind": "Namespace", "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
         "shortNames": ["ns"]},
        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
         "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
        {"name": "services", "singularName": "service", "namespaced": True, "kind": "Service",
         "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
         "shortNames": ["svc"], "categories": ["all"]},
        {"name": "services/proxy", "singularName": "", "namespaced": True,
         "kind": "ServiceProxyOptions", "verbs": ["create", "delete", "get", "patch", "update"]},
    ]
    ray = [
        {"name": "rayclusters", "singularName": "raycluster", "namespaced": True,
         "kind": "RayCluster", "categories": ["all"],
         "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]},
        {"name": "rayclusters/status", "singularName": "", "namespaced": True,
         "kind": "RayCluster", "verbs": ["get", "patch", "update"]},
    ]
    return {
        "/api": {"kind": "APIVersions", "versions": ["v1"],
                 "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                 "serverAddress": server.host_port}]},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "ray.io", "versions": [{"groupVersion": "ray.io/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "ray.io/v1", "version": "v1"}}]},
        "/apis/ray.io": {"kind": "APIGroup", "apiVersion": "v1", "name": "ray.io",
                         "versions": [{"groupVersion": "ray.io/v1", "version": "v1"}],
                         "preferredVersion": {"groupVersion": "ray.io/v1", "version": "v1"}},
        "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": core},
        "/apis/ray.io/v1": {"kind": "APIResourceList", "apiVersion": "v1",
                            "groupVersion": "ray.io/v1", "resources": ray},
        "/version": K8S_VERSION,
    }


def openapi_v3(path):
    """Just enough OpenAPI v3 for kubectl create/apply: cli-runtime's
    pkg/resource/query_param_verifier_v3.go looks for the fieldValidation
    query parameter on the PATCH operation of the kind; found, kubectl asks
    the server to validate (fieldValidation=Strict) instead of downloading
    schemas. Without /openapi/v3 (and /openapi/v2) kubectl create fails with
    "failed to download openapi"."""
    gvs = {"apis/ray.io/v1": ("ray.io", "v1", "RayCluster",
                              "/apis/ray.io/v1/namespaces/{namespace}/rayclusters/{name}"),
           "api/v1": ("", "v1", "Namespace", "/api/v1/namespaces/{name}")}
    if path.rstrip("/") == "/openapi/v3":
        return {"paths": {gv: {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (
            gv, hashlib.sha256(gv.encode()).hexdigest()[:32].upper())} for gv in gvs}}
    gv = gvs.get(path[len("/openapi/v3/"):].strip("/")) if path.startswith("/openapi/v3/") else None
    if gv is None:
        return None
    group, version, kind, route = gv
    param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
             "description": "fieldValidation instructs the server on how to handle objects in the "
                            "request containing unknown or duplicate fields."}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": K8S_VERSION["gitVersion"]},
            "paths": {route: {"patch": {
                "operationId": "patch" + kind, "parameters": [param],
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
                "responses": {"200": {"description": "OK"}}}}},
            "components": {"schemas": {}}}


RESOURCES = {"rayclusters": RAYCLUSTERS, "events": EVENTS, "services": SERVICES,
             "secrets": SECRETS, "namespaces": NAMESPACES}


# --------------------------------------------------------------------------
# server-side printing (Accept: ...;as=Table;g=meta.k8s.io): the CRD's
# printer columns, and the core event printer (pkg/printers/internalversion)

def jsonpath(obj, path):
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def table_columns(plural, schema):
    name = {"name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace."}
    if plural == "rayclusters":
        return [name] + [{"name": c["name"], "type": c["type"], "format": "",
                          "description": "", "priority": c.get("priority", 0)}
                         for c in schema.printer_columns]
    if plural == "events":
        cols = [("Last Seen", 0), ("Type", 0), ("Reason", 0), ("Object", 0), ("Subobject", 1),
                ("Source", 1), ("Message", 0), ("First Seen", 1), ("Count", 1), ("Name", 1)]
        return [{"name": n, "type": "string", "format": "", "description": "", "priority": p}
                for n, p in cols]
    return [name, {"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}]


def table_cells(plural, obj, schema):
    m = obj["metadata"]
    if plural == "rayclusters":
        cells = [m["name"]]
        for c in schema.printer_columns:
            v = jsonpath(obj, c["jsonPath"])
            cells.append(human_age(v) if c["type"] == "date" and v else v)
        return cells
    if plural == "events":
        last = obj.get("lastTimestamp") or obj.get("eventTime") or m.get("creationTimestamp")
        first = obj.get("firstTimestamp") or obj.get("eventTime") or m.get("creationTimestamp")
        io = obj.get("involvedObject", {})
        src = (obj.get("source") or {}).get("component") or obj.get("reportingComponent", "")
        return [human_age(last), obj.get("type"), obj.get("reason"),
                "%s/%s" % (io.get("kind", "").lower(), io.get("name")),
                io.get("fieldPath", ""), src, obj.get("message"), human_age(first),
                obj.get("count", 1), m["name"]]
    return [m["name"], human_age(m.get("creationTimestamp"))]


def to_table(plural, items, rv, schema, include):
    rows = []
    for o in items:
        if include == "Object":
            ref = o
        elif include == "None":
            ref = None
        else:
            ref = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": o["metadata"]}
        row = {"cells": table_cells(plural, o, schema)}
        if ref is not None:
            row["object"] = ref
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": table_columns(plural, schema), "rows": rows}


# --------------------------------------------------------------------------
# HTTP

class Dropped(Exception):
    pass


HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "host", "authorization",
               "content-length"}
FAULT_STATUS = {400: "BadRequest", 409: "Conflict", 429: "TooManyRequests",
                500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def version_string(self):
        return "kube-apiserver-emulator"

    def setup(self):
        # the TLS handshake happens here, in the connection's own thread
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    @property
    def srv(self):
        return self.server

    def peer_identity(self):
        """A verified client certificate: CN is the user, each O a group."""
        if not isinstance(self.connection, ssl.SSLSocket):
            return None
        cert = self.connection.getpeercert()
        if not cert:
            return None
        user, groups = None, []
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    user = v
                elif k == "organizationName":
                    groups.append(v)
        return (user, groups + ["system:authenticated"]) if user else None

    # -- plumbing

    def send_response(self, code, message=None):
        self._code = code
        super().send_response(code, message)

    def reply(self, code, body, ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Audit-Id", self.audit_id)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", ctype)
        for w in self.warnings:
            self.send_header("Warning", '299 - "%s"' % w.replace('"', '\\"'))
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_status(self, err):
        self.close_if_unread()
        self.reply(err.code, err.status(), headers=err.headers)

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise Dropped()

    def read_body(self):
        if self._body is not None:
            return self._body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._body = b"".join(self.chunks())
        else:
            n = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(n) if n else b""
        return self._body

    def chunks(self):
        while True:
            n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if n == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            data = self.rfile.read(n)
            self.rfile.readline()
            yield data

    def read_json(self, required=True):
        body = self.read_body()
        if not body.strip():
            if required:
                raise bad_request("the body of the request was in an unknown format - "
                                  "accepted media types include: application/json, application/yaml")
            return None
        try:
            return json.loads(body)
        except ValueError as e:
            raise bad_request("Object 'Kind' is missing in '%s': %s" % (body[:80].decode(errors="replace"), e))

    def close_if_unread(self):
        if self._body is None and (self.headers.get("Content-Length", "0") not in ("", "0")
                                   or self.headers.get("Transfer-Encoding")):
            self.close_connection = True

    def wants_table(self):
        return "as=Table" in self.headers.get("Accept", "")

    # -- dispatch

    def handle_any(self):
        self._body = None
        self._code = 0
        self.warnings = []
        self.audit_id = secrets.token_hex(16)
        self.user = None
        url = urllib.parse.urlsplit(self.path)
        self.query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        path = url.path
        try:
            if path.startswith("/_emulator/"):
                return self.control(path)
            self.serve_api(path)
        except ApiError as e:
            try:
                self.send_status(e)
            except OSError:
                self.close_connection = True
        except Dropped:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        finally:
            self.srv.log_request(self, path)

    def serve_api(self, path):
        s = self.srv
        try:
            self.user, groups = s.auth.authenticate(self)
        except ApiError:
            s.count("unauthorized")
            raise
        req = classify(self.command, path, self.query)
        resource = req["res"].plural + ("/" + req["sub"] if req["sub"] else "") if req["res"] else None
        if req["route"] == "discovery":
            ok = self.user != "system:anonymous" or path in ("/version", "/healthz", "/livez", "/readyz")
        else:
            ok = s.auth.allowed(self.user, groups, req["verb"], resource)
        if not ok:
            s.count("forbidden")
            raise forbidden(self.user, req["verb"], req["res"], req["sub"], req["name"],
                            req["ns"], path)
        kind = req["route"] if req["route"] in ("discovery", "proxy") else req["verb"]
        s.count(("%s %s" % (kind, req["res"].plural)) if req["res"] and kind != "proxy"
                else ("proxy %s" % self.command if kind == "proxy" else "discovery"))
        fault = s.take_fault(kind, req["res"].plural if req["res"] else None)
        if fault:
            self.apply_fault(fault)
        if fault and fault["action"] == "drop_after_accept":
            real = self.wfile
            self.wfile = __import__("io").BytesIO()
            try:
                self.dispatch(req, path)
            finally:
                self.wfile = real
            self.drop()
        self.dispatch(req, path)

    def apply_fault(self, f):
        a = f["action"]
        if a == "delay":
            time.sleep(float(f.get("seconds", 1)))
        elif a == "drop":
            self.read_body()
            self.drop()
        elif a == "status":
            self.read_body()
            code = int(f.get("status", 500))
            reason = FAULT_STATUS.get(code, "InternalError")
            msg = f.get("message") or {429: "Too many requests, please try again later."}.get(
                code, "Internal error occurred: emulated fault")
            headers, details = [], None
            if code == 429:
                ra = int(f.get("retry_after", 1))
                headers.append(("Retry-After", str(ra)))
                details = {"retryAfterSeconds": ra}
            raise ApiError(code, reason, msg, details, headers)

    def dispatch(self, req, path):
        route, verb, plural = req["route"], req["verb"], req["res"].plural if req["res"] else None
        if route == "discovery":
            return self.r_discovery(path)
        if route == "proxy":
            return self.r_proxy(req)
        if route == "status":
            if verb != "get":
                raise method_not_allowed()
            return self.r_get(plural, req["ns"], req["name"])
        if verb == "get":
            return self.r_get(plural, req["ns"], req["name"])
        if verb == "list":
            return self.r_list(plural, req["ns"])
        if verb == "watch":
            return self.r_watch(plural, req["ns"], req["name"])
        if plural != "rayclusters":
            raise method_not_allowed()
        if verb == "create":
            return self.r_create(req["ns"])
        if verb == "delete":
            return self.r_delete(req["ns"], req["name"])
        if verb in ("update", "patch"):
            return self.r_update(req["ns"], req["name"], verb)
        raise method_not_allowed()

    # -- resources

    def check_namespace(self, ns):
        if ns is not None and not self.srv.store.get("namespaces", None, ns):
            raise not_found(NAMESPACES, ns)

    def r_discovery(self, path):
        if path in ("/healthz", "/livez", "/readyz"):
            return self.reply(200, "ok", "text/plain; charset=utf-8")
        doc = api_resources(self.srv).get(path.rstrip("/") or "/")
        if doc is None:
            doc = openapi_v3(path)
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        self.reply(200, doc)

    def r_get(self, plural, ns, name):
        self.check_namespace(ns)
        obj = self.srv.store.get(plural, ns, name)
        if obj is None:
            raise not_found(RESOURCES[plural], name)
        if self.wants_table():
            return self.reply(200, to_table(plural, [obj], obj["metadata"]["resourceVersion"],
                                            self.srv.schema, self.query.get("includeObject")))
        self.reply(200, obj)

    def selected(self, plural, ns):
        labels = parse_label_selector(self.query.get("labelSelector"))
        fields = parse_field_selector(self.query.get("fieldSelector"), FIELDS.get(plural, ()))
        items, rv = self.srv.store.list(plural, ns)
        return [o for o in items if labels_match(labels, o["metadata"].get("labels"))
                and fields_match(fields, o)], rv, labels, fields

    def r_list(self, plural, ns):
        if ns is not None:
            self.check_namespace(ns)
        items, rv, _, _ = self.selected(plural, ns)
        meta = {"resourceVersion": rv}
        items = self.page(items, meta)
        if self.wants_table():
            return self.reply(200, to_table(plural, items, rv, self.srv.schema,
                                            self.query.get("includeObject")))
        res = RESOURCES[plural]
        if res.group == "":
            # typed lists carry no kind/apiVersion on their items
            for o in items:
                o.pop("kind", None)
                o.pop("apiVersion", None)
        self.reply(200, {"apiVersion": res.api_version, "kind": res.kind + "List",
                         "metadata": meta, "items": items})

    def page(self, items, meta):
        """limit and continue: the token is where the next page starts."""
        cont = self.query.get("continue")
        if cont:
            try:
                start = json.loads(base64.urlsafe_b64decode(cont.encode()))["start"]
            except (ValueError, KeyError):
                raise bad_request("continue key is not valid: illegal base64 data")
            items = [o for o in items if (o["metadata"].get("namespace") or "", o["metadata"]["name"])
                     > tuple(start)]
        limit = int(self.query.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"start": [last.get("namespace") or "", last["name"]]}).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return items

    def r_watch(self, plural, ns, name):
        """A stream of {"type", "object"} lines (storage/cacher semantics)."""
        if name:   # the deprecated /watch/ form of a single object
            self.query["fieldSelector"] = "metadata.name=" + name
        labels = parse_label_selector(self.query.get("labelSelector"))
        fields = parse_field_selector(self.query.get("fieldSelector"), FIELDS.get(plural, ()))
        store = self.srv.store
        timeout = float(self.query.get("timeoutSeconds") or random.uniform(1800, 3600))
        deadline = time.monotonic() + timeout
        bookmarks = self.query.get("allowWatchBookmarks") in ("true", "1")
        rv = self.query.get("resourceVersion")

        def match(o):
            return o is not None and (ns is None or o["metadata"].get("namespace") == ns) \
                and labels_match(labels, o["metadata"].get("labels")) and fields_match(fields, o)
        self.send_response(200)
        self.send_header("Audit-Id", self.audit_id)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        with store.lock:
            if rv in (None, "", "0"):
                pos = store.rv
                first = [("ADDED", o) for o in store.list(plural, ns)[0] if match(o)]
            else:
                try:
                    pos = int(rv)
                except ValueError:
                    pos = -1
                first = []
                if pos < store.oldest:
                    first = [("ERROR", ApiError(410, "Expired", "too old resource version: %s (%d)"
                                                % (rv, store.oldest)).status())]
                    pos = None
        self.send_events(first)
        last_sent = time.monotonic()
        while pos is not None and not self.srv.closing and time.monotonic() < deadline:
            out = []
            with store.cond:
                if pos < store.oldest:
                    out.append(("ERROR", ApiError(410, "Expired", "too old resource version: %d (%d)"
                                                  % (pos, store.oldest)).status()))
                    pos = None
                else:
                    for erv, typ, p, obj, old in store.log:
                        if erv <= pos or p != plural:
                            continue
                        pos = erv
                        now, before = match(obj) and typ != "DELETED", match(old)
                        if typ == "DELETED" and before:
                            out.append(("DELETED", obj))
                        elif now and before:
                            out.append(("MODIFIED", obj))
                        elif now:
                            out.append(("ADDED", obj))
                        elif before:
                            out.append(("DELETED", obj))
                    if not out:
                        store.cond.wait(min(1.0, max(0.01, deadline - time.monotonic())))
            if out:
                self.send_events(out)
                last_sent = time.monotonic()
            elif bookmarks and time.monotonic() - last_sent > 5:
                res = RESOURCES[plural]
                self.send_events([("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                                "metadata": {"resourceVersion": str(pos)}})])
                last_sent = time.monotonic()
        self.wfile.write(b"0\r\n\r\n")

    def send_events(self, events):
        for typ, obj in events:
            line = json.dumps({"type": typ, "object": obj}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()

    def strict(self):
        v = self.query.get("fieldValidation", "Warn")
        if v not in ("Strict", "Warn", "Ignore"):
            raise bad_request('fieldValidation parameter unsupported: %s' % v)
        return v

    def admit(self, obj, ns, name_hint):
        """Pruning and schema validation, as the CRD handler does them."""
        mode = self.strict()
        unknown, causes = self.srv.schema.check(obj)
        if unknown and mode == "Strict":
            raise bad_request('RayCluster in version "v1" cannot be handled as a RayCluster: '
                              'strict decoding error: %s'
                              % ", ".join('unknown field "%s"' % u for u in unknown))
        if mode == "Warn":
            self.warnings += ['unknown field "%s"' % u for u in unknown]
        if causes:
            raise invalid(RAYCLUSTERS, name_hint, causes)

    def r_create(self, ns):
        s = self.srv
        obj = self.read_json()
        if not isinstance(obj, dict):
            raise bad_request("the body of the request was in an unknown format")
        if obj.get("apiVersion") != "ray.io/v1" or obj.get("kind") != "RayCluster":
            raise bad_request("the API version in the data (%s) does not match the expected "
                              "API version (ray.io/v1)" % obj.get("apiVersion"))
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        self.check_namespace(ns)
        self.admit(obj, ns, meta.get("name") or meta.get("generateName") or "")
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + rand_suffix()
        if not name:
            raise invalid(RAYCLUSTERS, "", [("FieldValueRequired", "metadata.name",
                                             "Required value: name or generateName is required")])
        if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            raise invalid(RAYCLUSTERS, name, [("FieldValueInvalid", "metadata.name",
                                               'Invalid value: "%s": %s' % (name, DNS1123_MSG))])
        for k in SERVER_SET_META:
            meta.pop(k, None)
        meta.update({"name": name, "namespace": ns, "uid": new_uid(), "generation": 1,
                     "creationTimestamp": rfc3339()})
        obj.pop("status", None)     # the status subresource: ignored on create
        if self.query.get("dryRun") == "All":
            return self.reply(201, obj)
        with s.store.lock:
            if s.store.get("rayclusters", ns, name):
                raise already_exists(RAYCLUSTERS, name)
            stored = s.store.create("rayclusters", obj)
        s.controller.added(stored)
        self.reply(201, stored)

    def r_update(self, ns, name, verb):
        """PUT, or PATCH with application/merge-patch+json (RFC 7386);
        spec changes bump generation; status is not written here."""
        s = self.srv
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if verb == "patch" and ctype != "application/merge-patch+json":
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                           "unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml")
        body = self.read_json()
        cur = s.store.get("rayclusters", ns, name)
        if cur is None:
            raise not_found(RAYCLUSTERS, name)
        new = merge_patch(deep_copy(cur), body) if verb == "patch" else body
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise bad_request("the body of the request was in an unknown format")
        want_rv = new["metadata"].get("resourceVersion") if verb == "update" else \
            (body.get("metadata") or {}).get("resourceVersion")
        self.admit(new, ns, name)
        conflict = []

        def mutate(o):
            if want_rv and want_rv != o["metadata"]["resourceVersion"]:
                conflict.append(1)
                return False
            m = o["metadata"]
            for k in ("labels", "annotations", "finalizers", "ownerReferences"):
                if k in new["metadata"]:
                    m[k] = new["metadata"][k]
                else:
                    m.pop(k, None)
            if new.get("spec") != o.get("spec"):
                o["spec"] = new.get("spec")
                m["generation"] = m.get("generation", 1) + 1
        out = s.store.update("rayclusters", ns, name, mutate)
        if conflict:
            raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on rayclusters.ray.io '
                           '"%s": the object has been modified; please apply your changes to '
                           'the latest version and try again' % name,
                           {"name": name, "group": "ray.io", "kind": "rayclusters"})
        if out is None:
            raise not_found(RAYCLUSTERS, name)
        self.reply(200, out)

    def r_delete(self, ns, name):
        s = self.srv
        opts = self.read_json(required=False) or {}
        policy = opts.get("propagationPolicy") or self.query.get("propagationPolicy")
        if opts.get("orphanDependents") is True:
            policy = policy or "Orphan"
        policy = policy or "Background"   # the default for custom resources
        if policy not in ("Background", "Foreground", "Orphan"):
            raise invalid(RAYCLUSTERS, name, [("FieldValueNotSupported", "propagationPolicy",
                          'Unsupported value: "%s": supported values: "Foreground", '
                          '"Background", "Orphan", "nil"' % policy)])
        cur = s.store.get("rayclusters", ns, name)
        if cur is None:
            raise not_found(RAYCLUSTERS, name)
        pre = opts.get("preconditions") or {}
        for k, have in (("uid", cur["metadata"]["uid"]),
                        ("resourceVersion", cur["metadata"]["resourceVersion"])):
            if pre.get(k) and pre[k] != have:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on rayclusters.ray.io'
                               ' "%s": Precondition failed: %s in precondition: %s, %s in object '
                               'meta: %s' % (name, "UID" if k == "uid" else "ResourceVersion",
                                             pre[k], "UID" if k == "uid" else "ResourceVersion", have),
                               {"name": name, "group": "ray.io", "kind": "rayclusters"})
        if self.query.get("dryRun") == "All" or opts.get("dryRun") == ["All"]:
            return self.reply(200, cur)
        if cur["metadata"].get("deletionTimestamp"):
            return self.reply(200, cur)     # already being deleted
        if policy == "Background":
            gone = s.store.delete("rayclusters", ns, name)
            s.gc_later(gone, policy, remove=False)
            m = gone["metadata"]
            return self.reply(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success",
                                    "details": {"name": m["name"], "group": "ray.io",
                                                "kind": "rayclusters", "uid": m["uid"]}})
        finalizer = "foregroundDeletion" if policy == "Foreground" else "orphan"

        def mark(o):
            o["metadata"]["deletionTimestamp"] = rfc3339()
            o["metadata"]["deletionGracePeriodSeconds"] = 0
            o["metadata"]["finalizers"] = o["metadata"].get("finalizers", []) + [finalizer]
        out = s.store.update("rayclusters", ns, name, mark)
        s.gc_later(out, policy, remove=True)
        self.reply(200, out)

    # -- the service proxy (pkg/registry/core/service/proxy, upgradeaware.go)

    def r_proxy(self, req):
        ns, target, rest = req["ns"], req["name"], req["extra"]
        parts = target.split(":")
        if len(parts) == 3:            # scheme:name:port
            scheme, svc_name, port = parts
        elif len(parts) == 2 and parts[0] in ("http", "https"):
            scheme, svc_name, port = parts[0], parts[1], ""
        else:
            scheme, svc_name, port = "", parts[0], parts[1] if len(parts) == 2 else ""
        svc, dash = self.srv.controller.dashboard_for_service(ns, svc_name)
        if svc is None:
            raise not_found(SERVICES, svc_name)
        c = self.srv.controller
        with c.lock:
            early = not any(r.get("uid") in c.ready for r in svc["metadata"].get("ownerReferences", []))
        if early:
            # a client that did not wait for the status to say ready (tests)
            self.srv.count("proxy before ready")
        ports = svc["spec"]["ports"]
        chosen = [p for p in ports if port in (p["name"], str(p["port"]))] if port else \
            (ports if len(ports) == 1 else [p for p in ports if not p.get("name")])
        if not chosen or dash is None:
            raise unavailable('no endpoints available for service "%s"' % svc_name)
        if chosen[0]["name"] != "dashboard" or scheme == "https":
            # only the dashboard port has something listening behind it
            raise unavailable("error trying to reach service: dial tcp 10.244.0.2:%d: connect: "
                              "connection refused" % chosen[0]["port"])
        if not dash.alive():
            raise unavailable("error trying to reach service: dial tcp 10.244.0.2:8265: "
                              "connect: connection refused")
        url = urllib.parse.urlsplit(self.path)
        target_path = "/" + rest + ("?" + url.query if url.query else "")
        if self.headers.get("Upgrade"):
            return self.proxy_upgrade(dash.port, target_path)
        self.proxy_http(dash.port, target_path)

    def forwarded_headers(self):
        """The request's headers minus hop-by-hop ones and Authorization: the
        apiserver authenticated the caller and removes its credentials."""
        return [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_HEADERS]

    def proxy_http(self, port, path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", "127.0.0.1:%d" % port)
            for k, v in self.forwarded_headers():
                conn.putheader(k, v)
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            n = int(self.headers.get("Content-Length") or 0)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif n or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(n))
            conn.endheaders()
            if chunked:        # streamed: 100 MiB package uploads stay off our heap
                for c in self.chunks():
                    conn.send(b"%x\r\n%s\r\n" % (len(c), c))
                conn.send(b"0\r\n\r\n")
                self._body = b""
            else:
                while n:
                    c = self.rfile.read(min(n, 1 << 16))
                    if not c:
                        raise Dropped()
                    conn.send(c)
                    n -= len(c)
                self._body = b""
            resp = conn.getresponse()
        except (ConnectionRefusedError, ConnectionResetError, http.client.HTTPException, OSError) as e:
            if isinstance(e, (BrokenPipeError,)) and self._body is None:
                raise
            raise unavailable("error trying to reach service: %s" % e)
        self.send_response(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            c = resp.read1(1 << 16) if hasattr(resp, "read1") else resp.read(1 << 16)
            if not c:
                break
            self.wfile.write(c if length is not None else b"%x\r\n%s\r\n" % (len(c), c))
        if length is None:
            self.wfile.write(b"0\r\n\r\n")
        conn.close()

    def proxy_upgrade(self, port, path):
        """WebSocket and other upgrades: the handshake is forwarded, then
        bytes are spliced both ways until either side closes."""
        up = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = ["%s %s HTTP/1.1" % (self.command, path), "Host: 127.0.0.1:%d" % port]
        for k, v in self.headers.items():
            if k.lower() not in ("authorization", "host"):
                head.append("%s: %s" % (k, v))
        up.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        up.settimeout(None)
        self.close_connection = True
        self._code = 101
        down = self.connection

        def pump(read, dst):
            try:
                while True:
                    data = read(1 << 16)
                    if not data:
                        break
                    dst.sendall(data)
            except (OSError, ValueError):
                pass
            for sock in (up, down):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        t = threading.Thread(target=pump, args=(up.recv, down), daemon=True)
        t.start()
        # the client's side through rfile: bytes already buffered go first
        pump(self.rfile.read1, up)
        t.join(5)
        up.close()

    # -- emulator control (not upstream): no auth, no faults

    def control(self, path):
        s = self.srv
        body = self.read_body() or b""
        spec = json.loads(body) if body.strip() else {}
        if path == "/_emulator/state":
            return self.reply(200, s.state())
        if self.command != "POST":
            raise method_not_allowed()
        if path == "/_emulator/faults":
            with s.lock:
                s.faults.extend(spec if isinstance(spec, list) else [spec])
                return self.reply(200, {"faults": s.faults})
        if path == "/_emulator/tokens":
            if spec.get("revoke_exec"):
                s.auth.exec_not_before = time.time()
                return self.reply(200, {"revoked": True})
            tok = s.auth.mint(spec.get("user", "minted"), spec.get("groups", [MASTERS]),
                              spec.get("ttl"))
            return self.reply(200, {"token": tok})
        if path == "/_emulator/policy":
            s.auth.deny = list(spec.get("deny", []))
            return self.reply(200, {"deny": s.auth.deny})
        if path == "/_emulator/config":
            for k in ("ready_delay", "head_ready_lag", "stale_status", "dashboard_lag", "gc_delay"):
                if k in spec:
                    setattr(s, k, float(spec[k]))
            if "dashboard_args" in spec:
                s.dashboard_args = list(spec["dashboard_args"])
            return self.reply(200, s.config())
        if path == "/_emulator/compact":
            s.store.compact()
            return self.reply(200, {"oldest": str(s.store.oldest)})
        if path == "/_emulator/kill-dashboard":
            return self.reply(200, {"killed": s.kill_dashboard(spec.get("namespace", "default"),
                                                               spec["name"])})
        raise ApiError(404, "NotFound", "no such emulator route", {})

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


def classify(method, path, query):
    """-> route, verb, res, sub, ns, name, extra (the proxied path)."""
    r = {"route": "resource", "verb": None, "res": None, "sub": None, "ns": None, "name": None,
         "extra": ""}
    if path.rstrip("/") in ("/version", "/api", "/apis", "/api/v1", "/apis/ray.io",
                            "/apis/ray.io/v1", "/healthz", "/livez", "/readyz") \
            or path.startswith("/openapi/"):
        r.update(route="discovery", verb="get")
        return r
    m = re.match(r"^/api/v1/(?:namespaces/([^/]+)/)?([a-z]+)(?:/([^/]+))?(?:/([^/]+))?(?:/(.*))?$", path) \
        or re.match(r"^/apis/ray\.io/v1/(?:namespaces/([^/]+)/)?(rayclusters)(?:/([^/]+))?(?:/(status))?()$", path)
    if path.startswith("/api/v1/namespaces/") and path.count("/") == 4:
        # a namespace itself: /api/v1/namespaces/NAME
        m = None
        r.update(res=NAMESPACES, name=path.split("/")[4])
    elif path == "/api/v1/namespaces":
        m = None
        r.update(res=NAMESPACES)
    elif not m or m.group(2) not in RESOURCES:
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
    else:
        ns, plural, name, sub, extra = m.groups()
        r.update(res=RESOURCES[plural], ns=ns, name=name, sub=sub, extra=extra or "")
        if plural in ("rayclusters",) and not path.startswith("/apis/"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if plural != "rayclusters" and path.startswith("/apis/"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if sub == "proxy" and plural == "services":
            verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update",
                    "PATCH": "patch", "DELETE": "delete", "OPTIONS": "get"}.get(method, "get")
            r.update(route="proxy", verb=verb)
            return r
        if sub == "status" and plural == "rayclusters":
            r["route"] = "status"
        elif sub or extra:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
    watch = query.get("watch") in ("1", "true")
    name = r["name"]
    r["verb"] = {"GET": ("watch" if watch else ("get" if name else "list")), "HEAD": "get",
                 "POST": "create", "PUT": "update", "PATCH": "patch",
                 "DELETE": "delete" if name else "deletecollection"}.get(method, "unknown")
    if method == "POST" and name:
        raise method_not_allowed()
    return r


# --------------------------------------------------------------------------
# the server

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, args, state_dir, tls):
        super().__init__(("127.0.0.1", args.port), Handler)
        self.args = args
        self.state_dir = state_dir
        self.tls = tls
        self.lock = threading.RLock()
        self.closing = False
        self.counters = {}
        self.requests = deque(maxlen=500)
        self.faults = []
        self.ready_delay = args.ready_delay
        self.head_ready_lag = args.head_ready_lag
        self.stale_status = args.stale_status
        self.dashboard_lag = args.dashboard_lag
        self.gc_delay = args.gc_delay
        self.dashboard_args = list(args.dashboard_arg)
        self.legacy_events = vt(args.kuberay_version) < (1, 7, 0)
        self.host_port = "127.0.0.1:%d" % self.server_address[1]
        self.schema = Schema(SCHEMA_FILE)
        self.store = Store()
        self.auth = Auth(args, state_dir)
        self.controller = Controller(self)
        for ns in ["default", "kube-system", "kube-public"] + list(args.namespace):
            if not self.store.get("namespaces", None, ns):
                self.store.create("namespaces", {
                    "kind": "Namespace", "apiVersion": "v1",
                    "metadata": {"name": ns, "uid": new_uid(), "creationTimestamp": rfc3339(),
                                 "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls:
            # the handshake is done by the connection's thread (Handler.setup)
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass

    def count(self, key):
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            self.counters["total"] = self.counters.get("total", 0) + 1

    def log_request(self, handler, path):
        self.requests.append({"t": round(time.time(), 3), "method": handler.command,
                              "path": path, "code": getattr(handler, "_code", 0),
                              "user": handler.user})

    def take_fault(self, kind, plural):
        with self.lock:
            for f in self.faults:
                if f.get("count", 1) <= 0:
                    continue
                if f.get("route") in (kind, "*") and f.get("resource") in (None, plural):
                    if f["action"] == "drop_after_accept" and kind in ("watch", "discovery"):
                        continue
                    f["count"] = f.get("count", 1) - 1
                    return dict(f)
        return None

    def gc_later(self, obj, policy, remove):
        """The garbage collector: dependents after --gc-delay; then, for
        Foreground and Orphan, the finalizer goes and the object with it."""
        def run():
            time.sleep(self.gc_delay)
            self.controller.deleted(obj, policy)
            if remove:
                m = obj["metadata"]
                self.store.delete("rayclusters", m["namespace"], m["name"])
        threading.Thread(target=run, daemon=True, name="gc").start()

    def kill_dashboard(self, ns, name):
        """A head pod crash: its dashboard dies (SIGKILL)."""
        with self.controller.lock:
            for key, d in self.controller.dashboards.items():
                if key[0] == ns and key[1] == name:
                    d.proc.kill()
                    return d.pid
        return None

    def config(self):
        return {"ready_delay": self.ready_delay, "head_ready_lag": self.head_ready_lag,
                "stale_status": self.stale_status, "dashboard_lag": self.dashboard_lag,
                "gc_delay": self.gc_delay, "dashboard_args": self.dashboard_args}

    def state(self):
        c = self.controller
        items, rv = self.store.list("rayclusters")
        with c.lock:
            dashes = {k: d for k, d in c.dashboards.items()}
            orphans = [{"namespace": d.key[0], "name": d.key[1], "uid": d.key[2], "pid": d.pid,
                        "url": d.url, "alive": d.alive()} for d in c.orphans]
            stopped = [{"namespace": k[0], "name": k[1], "uid": k[2], "pid": p,
                        "alive": pid_alive(p)} for k, p in c.stopped]
        clusters = []
        for o in items:
            m = o["metadata"]
            d = dashes.get((m["namespace"], m["name"], m["uid"]))
            clusters.append({"namespace": m["namespace"], "name": m["name"], "uid": m["uid"],
                             "state": (o.get("status") or {}).get("state"),
                             "deleting": bool(m.get("deletionTimestamp")),
                             "labels": m.get("labels", {}),
                             "dashboard": {"pid": d.pid, "url": d.url, "alive": d.alive(),
                                           "state_dir": d.dir} if d else None})
        with self.lock:
            return {"clusters": clusters, "orphaned_dashboards": orphans,
                    "stopped_dashboards": stopped, "resourceVersion": rv,
                    "counters": dict(self.counters), "requests": list(self.requests)[-100:],
                    "exec_plugin_runs": self.auth.exec_runs(), "config": self.config(),
                    "state_dir": self.state_dir,
                    "kubeconfig": os.path.join(self.state_dir, "kubeconfig"),
                    "tokens": {"admin": self.auth.admin_token, "viewer": self.auth.viewer_token,
                               "nobody": self.auth.nobody_token}}


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours is not alive: Popen.wait reaped it, so this is rare
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def vt(s):
    nums = [int(x) for x in re.findall(r"\d+", s or "")[:3]]
    return tuple(nums + [0] * (3 - len(nums)))


# --------------------------------------------------------------------------
# certificates (openssl CLI) and the kubeconfig

def openssl(*argv, cwd):
    subprocess.run(["openssl"] + list(argv), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_certs(d):
    """A test CA, a server certificate for 127.0.0.1 (Go and curl need the IP
    in subjectAltName), and a client certificate CN=admin, O=system:masters."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3",
            "-subj", "/CN=kube-apiserver-emulator-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, subj, ext in (
            ("server", "/CN=kube-apiserver",
             "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n"
             "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"),
            ("client", "/O=system:masters/CN=admin",
             "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", subj, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".crt", "-days", "3",
                "-extfile", name + ".ext", cwd=d)
    for f in os.listdir(d):
        if f.endswith(".key"):
            os.chmod(os.path.join(d, f), 0o600)


def yaml_doc(v, indent=0):
    """A small block-YAML writer for the kubeconfig (strings JSON-quoted)."""
    pad = " " * indent
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                out.append("%s%s:" % (pad, k))
                out.append(yaml_doc(x, indent + 2))
            else:
                out.append("%s%s: %s" % (pad, k, scalar(x)))
    else:
        for x in v:
            if isinstance(x, dict) and x:
                first = yaml_doc(x, indent + 2).split("\n")
                out.append("%s- %s" % (pad, first[0].lstrip()))
                out.extend(first[1:])
            else:
                out.append("%s- %s" % (pad, scalar(x)))
    return "\n".join(out)


def scalar(x):
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, (dict, list)):
        return "{}" if isinstance(x, dict) else "[]"
    return json.dumps(x)


def write_kubeconfig(server, url):
    """STATE/kubeconfig: contexts token (current), cert, cert-data, exec,
    tokenfile, viewer and nobody, all in namespace default."""
    d = server.state_dir
    a = server.auth
    b64 = lambda p: base64.b64encode(open(os.path.join(d, p), "rb").read()).decode()
    clusters = [{"name": "emulator", "cluster": {"server": url}}]
    if server.tls:
        clusters[0]["cluster"]["certificate-authority-data"] = b64("ca.crt")
        clusters.append({"name": "emulator-ca-file", "cluster": {
            "server": url, "certificate-authority": os.path.join(d, "ca.crt")}})
    with open(os.path.join(d, "admin.token"), "w") as f:
        f.write(a.admin_token + "\n")
    users = [
        {"name": "admin-token", "user": {"token": a.admin_token}},
        {"name": "admin-tokenfile", "user": {"tokenFile": os.path.join(d, "admin.token")}},
        {"name": "viewer", "user": {"token": a.viewer_token}},
        {"name": "nobody", "user": {"token": a.nobody_token}},
        {"name": "exec", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [EXEC_PLUGIN, "--key-file", a.exec_key_file, "--count-file",
                     a.exec_count_file, "--user", "exec-user",
                     "--ttl", str(server.args.exec_ttl),
                     "--server-ttl", str(server.args.exec_server_ttl or server.args.exec_ttl)],
            "interactiveMode": "Never", "provideClusterInfo": False}}},
    ]
    contexts = [("token", "emulator", "admin-token"), ("tokenfile", "emulator", "admin-tokenfile"),
                ("viewer", "emulator", "viewer"), ("nobody", "emulator", "nobody"),
                ("exec", "emulator", "exec")]
    if server.tls:
        users += [{"name": "admin-cert", "user": {
                      "client-certificate": os.path.join(d, "client.crt"),
                      "client-key": os.path.join(d, "client.key")}},
                  {"name": "admin-cert-data", "user": {
                      "client-certificate-data": b64("client.crt"),
                      "client-key-data": b64("client.key")}}]
        contexts += [("cert", "emulator-ca-file", "admin-cert"),
                     ("cert-data", "emulator", "admin-cert-data")]
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "token",
           "clusters": clusters, "users": users,
           "contexts": [{"name": n, "context": {"cluster": c, "user": u, "namespace": "default"}}
                        for n, c, u in contexts],
           "preferences": {}}
    path = os.path.join(d, "kubeconfig")
    with open(path + ".tmp", "w") as f:
        f.write(yaml_doc(doc) + "\n")
    os.chmod(path + ".tmp", 0o600)
    os.rename(path + ".tmp", path)
    return path


def tls_context(d):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "server.crt"), os.path.join(d, "server.key"))
    ctx.load_verify_locations(os.path.join(d, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL     # a certificate is one way in, not the only one
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --------------------------------------------------------------------------
# main

def parse_args(argv):
    p = argparse.ArgumentParser(description="Kubernetes API + KubeRay emulator")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--plain-http", action="store_true", help="no TLS (no client certificates)")
    p.add_argument("--ready-delay", type=float, default=1.0,
                   help="seconds from create to pods Running and Ready")
    p.add_argument("--head-ready-lag", type=float, default=0.0,
                   help="seconds state says ready while HeadPodReady is still False")
    p.add_argument("--stale-status", type=float, default=0.0,
                   help="seconds a ready status carries an older observedGeneration")
    p.add_argument("--dashboard-lag", type=float, default=0.0,
                   help="seconds the dashboard starts after the head pod is Ready")
    p.add_argument("--gc-delay", type=float, default=0.2,
                   help="seconds before the garbage collector removes dependents")
    p.add_argument("--admin-token", default=None)
    p.add_argument("--token", action="append", default=[], help="TOKEN:USER[:GROUP,...]")
    p.add_argument("--token-auth-file", default=None, help="CSV: token,user,uid,\"g1,g2\"")
    p.add_argument("--anonymous-auth", action="store_true",
                   help="requests without credentials are system:anonymous (403), not 401")
    p.add_argument("--exec-ttl", type=float, default=300.0,
                   help="the expirationTimestamp the exec plugin announces, in seconds")
    p.add_argument("--exec-server-ttl", type=float, default=None,
                   help="how long the server accepts an exec token (default: --exec-ttl)")
    p.add_argument("--kuberay-version", default="1.7.0",
                   help="before 1.7 events are written by the legacy core/v1 recorder")
    p.add_argument("--namespace", action="append", default=[], help="an extra namespace")
    p.add_argument("--dashboard-arg", action="append", default=[],
                   help="an argument for every ray_dashboard.py started")
    p.add_argument("--max-life", type=float, default=3600.0)
    p.add_argument("--ignore-stdin", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    own_state = args.state_dir is None
    state_dir = os.path.abspath(tempfile.mkdtemp(prefix="kube-apiserver-") if own_state
                                else args.state_dir)
    os.makedirs(state_dir, exist_ok=True)
    tls = None
    if not args.plain_http:
        make_certs(state_dir)
        tls = tls_context(state_dir)
    server = Server(args, state_dir, tls)
    url = "%s://%s" % ("http" if args.plain_http else "https", server.host_port)
    kubeconfig = write_kubeconfig(server, url)
    print("listening %s" % url, flush=True)
    print("kubeconfig %s" % kubeconfig, flush=True)
    print("state-dir %s" % state_dir, flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read1(4096):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    if not args.ignore_stdin:
        threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    done.wait(args.max_life if args.max_life > 0 else None)
    server.closing = True
    with server.store.cond:
        server.store.cond.notify_all()
    server.controller.shutdown()
    server.shutdown()
    server.server_close()
    if own_state:
        shutil.rmtree(state_dir, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
