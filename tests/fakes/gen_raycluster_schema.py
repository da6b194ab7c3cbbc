#!/usr/bin/env python3
"""Writes tests/fakes/raycluster_schema.json, the structural schema the
Kubernetes API emulator (kube_apiserver.py) prunes and validates RayClusters
with, from KubeRay's CRD.

usage: gen_raycluster_schema.py ray.io_rayclusters.yaml [COMMIT] > raycluster_schema.json

The input is ray-operator/config/crd/bases/ray.io_rayclusters.yaml from
ray-project/kuberay. Run by hand (it needs PyYAML); the emulator itself only
reads the JSON. Only what the apiserver's pruning and structural validation
use is kept (type, properties, items, additionalProperties, required, enum,
nullable, x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields);
patterns, formats and bounds are dropped. Subtrees used more than once (the
pod template of the head and of every worker group) are stored once under
"defs" and referenced as {"$ref": KEY}.
"""
import hashlib
import json
import sys

import yaml

KEEP = ("type", "properties", "items", "additionalProperties", "required", "enum",
        "nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def dump(x):
    return json.dumps(x, separators=(",", ":"), sort_keys=True)


def strip(n):
    out = {}
    for k in KEEP:
        if k not in n:
            continue
        v = n[k]
        if k == "properties":
            v = {p: strip(q) for p, q in v.items()}
        elif k == "items" or (k == "additionalProperties" and isinstance(v, dict)):
            v = strip(v)
        out[k] = v
    return out


def children(n):
    for q in n.get("properties", {}).values():
        yield q
    for k in ("items", "additionalProperties"):
        if isinstance(n.get(k), dict):
            yield n[k]


def main():
    crd = yaml.safe_load(open(sys.argv[1]))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    root = strip(version["schema"]["openAPIV3Schema"])
    uses = {}

    def count(n):
        uses[dump(n)] = uses.get(dump(n), 0) + 1
        for c in children(n):
            count(c)
    count(root)
    defs = {}

    def dedup(n):
        text = dump(n)
        out = dict(n)
        if "properties" in n:
            out["properties"] = {p: dedup(q) for p, q in n["properties"].items()}
        for k in ("items", "additionalProperties"):
            if isinstance(n.get(k), dict):
                out[k] = dedup(n[k])
        if uses[text] > 1 and len(text) > 200:
            key = hashlib.sha1(text.encode()).hexdigest()[:10]
            defs[key] = out
            return {"$ref": key}
        return out
    top = dedup(root)
    source = "ray-project/kuberay ray-operator/config/crd/bases/ray.io_rayclusters.yaml"
    if len(sys.argv) > 2:
        source += " at " + sys.argv[2]
    doc = {"source": source,
           "printerColumns": version.get("additionalPrinterColumns", []),
           "schema": top, "defs": defs}
    # one def per line: diffs stay readable when the CRD changes
    lines = ["{"]
    for k in ("source", "printerColumns", "schema"):
        lines.append("%s:%s," % (dump(k), dump(doc[k])))
    lines.append('"defs":{')
    keys = sorted(defs)
    for i, k in enumerate(keys):
        lines.append("%s:%s%s" % (dump(k), dump(defs[k]), "," if i < len(keys) - 1 else ""))
    lines.append("}}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
