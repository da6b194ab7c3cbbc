#!/usr/bin/env python3
"""An emulator of the Ray dashboard's Job Submission REST API that really runs
what it is sent. Python 3 standard library only.

usage: ray_dashboard.py [--port N] [--ray-version X.Y.Z] [--old]
                        [--auth-token TOKEN] [--nodes N] [--num-cpus N]
                        [--num-gpus N] [--memory BYTES] [--resources JSON]
                        [--node-resources JSON-LIST]
                        [--state-dir DIR] [--stop-wait S] [--setup-delay S]
                        [--job-start-timeout S] [--drivers-call-ray-init]
                        [--no-autoscaler-status] [--strict-package-names]
                        [--fail-next-submit-after-accept] [--max-life S]

It listens on 127.0.0.1, prints "listening http://127.0.0.1:PORT" as its first
line, and exits when its stdin closes, on SIGTERM/SIGINT, or after --max-life
seconds, killing every job it started. tests/fakes/README.md describes what is
emulated and what is not.

Built from a reading of ray-project/ray (no code copied):
  python/ray/dashboard/http_server_head.py          routes, middleware order,
      public paths, the browser guard, /api/authentication_mode
  python/ray/_private/authentication/http_token_authentication.py,
      authentication_constants.py, src/ray/rpc/authentication/
      authentication_token.h                        401/403 bodies, header order,
      exact "Bearer " prefix
  python/ray/dashboard/modules/job/job_head.py      status codes and bodies; the
      agent's 400 re-raised as RuntimeError -> 500 at the head
  python/ray/dashboard/modules/job/job_agent.py     submit/stop/delete/logs
  python/ray/dashboard/modules/job/job_manager.py   submission ids, duplicate id,
      PENDING until scheduled, start timeout, runtime_env failure, delete rule
  python/ray/dashboard/modules/job/job_supervisor.py  /bin/sh -c in a new
      session, env (RAY_ADDRESS, RAY_JOB_CONFIG_JSON_ENV_VAR,
      PYTHONUNBUFFERED), SIGTERM then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (3),
      exit-code message with the last 10 log lines
  python/ray/dashboard/modules/job/job_log_storage_client.py  10 lines, 20000 chars
  python/ray/dashboard/modules/job/common.py        JobStatus, JobInfo default
      messages, JobSubmitRequest validation
  python/ray/dashboard/modules/job/pydantic_models.py  JobDetails fields
  python/ray/dashboard/modules/job/utils.py         strip_keys_with_value_none,
      parse_and_validate_request (400 + traceback), find_job_by_ids
  python/ray/dashboard/modules/version.py           /api/version fields
  python/ray/dashboard/subprocesses/handle.py       newer heads read the body in
      the proxy, so an oversize PUT is a 413 there
  python/ray/dashboard/modules/reporter/reporter_head.py, dashboard utils
      rest_response/to_google_style               /api/cluster_status shape
  python/ray/autoscaler/_private/load_metrics.py    usage = (used, total)
  python/ray/_private/runtime_env/packaging.py      gcs:// names, 100 MiB body and
      GCS size limits, unzip as-is for gcs:// (top dir stripped for remote),
      extractall drops file modes, the missing-package IOError text
  python/ray/_private/runtime_env/working_dir.py, py_modules.py  per-URI
      unpack dirs (working_dir_files/, py_modules_files/), cwd, PYTHONPATH
"""
import argparse
import base64
import datetime
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import zipfile
import http.server
import io
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Union

MiB = 1024 * 1024
# ray_constants.DASHBOARD_CLIENT_MAX_SIZE: aiohttp's client_max_size for the app.
DASHBOARD_CLIENT_MAX_SIZE = 100 * MiB
# packaging.GCS_STORAGE_MAX_SIZE (RAY_max_grpc_message_size, 500 MiB here).
GCS_STORAGE_MAX_SIZE = 500 * MiB
# JobLogStorageClient
NUM_LOG_LINES_ON_ERROR = 10
MAX_LOG_SIZE = 20000
# Public paths of http_server_head.py (no token needed).
PUBLIC_EXACT_PATHS = {
    "/", "/favicon.ico", "/api/authentication_mode", "/api/authenticate",
    "/api/healthz", "/api/gcs_healthz", "/api/local_raylet_healthz", "/-/healthz",
}
PUBLIC_PREFIXES = ("/static/",)
# optional_utils.is_browser_request
BROWSER_HEADERS = (
    "Referer", "Origin", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-Site",
    "Sec-Fetch-User", "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
)
TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")
AIOHTTP_500 = "500 Internal Server Error\n\nServer got itself in trouble"
# Paths in the tracebacks we write: upstream shapes, invented line numbers.
SITE = "/home/ray/anaconda3/lib/python3.11/site-packages/ray"


def vtuple(s):
    out = []
    for part in s.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out + [0] * (3 - len(out)))


def now_ms():
    return int(time.time() * 1000)


def fake_traceback(frames, last):
    """A Python traceback text: frames are (file, line, func, code)."""
    lines = ["Traceback (most recent call last):"]
    for f, n, fn, code in frames:
        lines.append('  File "%s", line %d, in %s' % (f, n, fn))
        lines.append("    " + code)
    lines.append(last)
    return "\n".join(lines) + "\n"


def agent_error_at_head(agent_status, agent_text, func, call):
    """job_head.JobAgentSubmissionClient._raise_error, caught as Exception by
    the head's handler: 500 with this traceback."""
    return fake_traceback(
        [(SITE + "/dashboard/modules/job/job_head.py", 311, func, call),
         (SITE + "/dashboard/modules/job/job_head.py", 78, func + "_internal",
          "await self._raise_error(resp)"),
         (SITE + "/dashboard/modules/job/job_head.py", 62, "_raise_error",
          'raise RuntimeError(f"Request failed with status code {status}: '
          '{error_text}.")')],
        "RuntimeError: Request failed with status code %d: %s." % (agent_status, agent_text))


# --------------------------------------------------------------------------
# JobSubmitRequest (common.py): a dataclass built with **json, so unknown
# keys raise TypeError exactly as upstream's does.

def _check_submit(r):
    def typ(v):
        return str(type(v))
    if not isinstance(r.entrypoint, str):
        raise TypeError("entrypoint must be a string, got %s" % typ(r.entrypoint))
    if r.submission_id is not None and not isinstance(r.submission_id, str):
        raise TypeError("submission_id must be a string if provided, got %s" % typ(r.submission_id))
    if r.job_id is not None and not isinstance(r.job_id, str):
        raise TypeError("job_id must be a string if provided, got %s" % typ(r.job_id))
    if r.runtime_env is not None:
        if not isinstance(r.runtime_env, dict):
            raise TypeError("runtime_env must be a dict, got %s" % typ(r.runtime_env))
    if r.metadata is not None:
        if not isinstance(r.metadata, dict):
            raise TypeError("metadata must be a dict, got %s" % typ(r.metadata))
        for v in r.metadata.values():
            if not isinstance(v, str):
                raise TypeError("metadata values must be strings, got %s" % typ(v))
    for name in ("entrypoint_num_cpus", "entrypoint_num_gpus"):
        v = getattr(r, name, None)
        # isinstance(True, int) holds: upstream accepts booleans here too.
        if v is not None and not isinstance(v, (int, float)):
            raise TypeError("%s must be a number, got %s" % (name, typ(v)))
    v = getattr(r, "entrypoint_memory", None)
    if v is not None and not isinstance(v, int):
        raise TypeError("entrypoint_memory must be an integer, got %s" % typ(v))
    v = getattr(r, "entrypoint_resources", None)
    if v is not None:
        if not isinstance(v, dict):
            raise TypeError("entrypoint_resources must be a dict, got %s" % typ(v))
        for x in v.values():
            if not isinstance(x, (int, float)):
                raise TypeError("entrypoint_resources values must be numbers, got %s" % typ(x))
    v = getattr(r, "entrypoint_label_selector", None)
    if v is not None:
        if not isinstance(v, dict):
            raise TypeError("entrypoint_label_selector must be a dict, got %s" % typ(v))
        for x in v.values():
            if not isinstance(x, str):
                raise TypeError("entrypoint_label_selector values must be strings, got %s" % typ(x))


def make_request_class(ray_version):
    """The JobSubmitRequest of a given Ray version: fields appear with the
    releases that added them (2.2 cpus/gpus/resources, 2.8 memory; the label
    selector is assumed from 2.49)."""
    v = vtuple(ray_version)
    ns = {"__annotations__": {}}
    ann = ns["__annotations__"]
    ann["entrypoint"] = str
    for name in ("submission_id", "job_id", "runtime_env", "metadata"):
        ann[name] = Optional[Any]
        ns[name] = None
    if v >= (2, 2, 0):
        for name in ("entrypoint_num_cpus", "entrypoint_num_gpus"):
            ann[name] = Optional[Union[int, float]]
            ns[name] = None
    if v >= (2, 8, 0):
        ann["entrypoint_memory"] = Optional[int]
        ns["entrypoint_memory"] = None
    if v >= (2, 2, 0):
        ann["entrypoint_resources"] = Optional[Dict[str, float]]
        ns["entrypoint_resources"] = None
    if v >= (2, 49, 0):
        ann["entrypoint_label_selector"] = Optional[Dict[str, str]]
        ns["entrypoint_label_selector"] = None
    ns["__post_init__"] = _check_submit
    return dataclass(type("JobSubmitRequest", (), ns))


def validate_submit(cls, data):
    """parse_and_validate_request: returns the request or (400, traceback)."""
    data = {k: v for k, v in data.items() if v is not None}   # strip_keys_with_value_none
    try:
        return cls(**data)
    except Exception as e:
        frames = [
            (SITE + "/dashboard/modules/job/utils.py", 167, "parse_and_validate_request",
             "return validate_request_type(json_data, request_type)"),
            (SITE + "/dashboard/modules/job/common.py", 481, "validate_request_type",
             "return request_type(**json_data)")]
        if "must be" in str(e):
            frames += [("<string>", 12, "__init__", ""),
                       (SITE + "/dashboard/modules/job/common.py", 530, "__post_init__",
                        "raise TypeError(")]
        return fake_traceback(frames, "%s: %s" % (type(e).__name__, e))


# --------------------------------------------------------------------------
# Cluster state

class Node:
    def __init__(self, index, resources, state_dir):
        self.index = index
        # a NodeID is 28 bytes: 56 hex characters
        self.node_id = hashlib.sha256(("node-%d-%s" % (index, state_dir)).encode()).hexdigest()[:56]
        self.ip = "127.0.0.1"
        self.agent_port = 52365 + index
        self.total = dict(resources)
        self.avail = dict(resources)
        self.gpu_free = list(range(int(resources.get("GPU", 0))))
        self.home = os.path.join(state_dir, "node-%d" % index)
        self.resources_dir = os.path.join(self.home, "runtime_resources")
        os.makedirs(self.resources_dir, exist_ok=True)
        self.labels = {"ray.io/node-id": self.node_id}

    def fits(self, req):
        return all(self.avail.get(k, 0) + 1e-9 >= v for k, v in req.items() if v > 0)

    def utilization_after(self, req):
        u = 0.0
        for k in ("CPU", "GPU", "memory"):
            t = self.total.get(k, 0)
            if t > 0:
                u = max(u, (t - self.avail.get(k, 0) + req.get(k, 0)) / t)
        return u


class Job:
    def __init__(self, sid, req, resources, seq):
        self.submission_id = sid
        self.entrypoint = req.entrypoint
        self.status = "PENDING"
        self.message = None
        self.error_type = None
        self.start_time = now_ms()
        self.end_time = None
        self.metadata = req.metadata
        self.runtime_env = req.runtime_env
        self.resources = resources          # what the supervisor actor reserves
        self.label_selector = getattr(req, "entrypoint_label_selector", None) or {}
        self.resources_specified = any(v > 0 for v in resources.values())
        self.driver_agent_http_address = None
        self.driver_node_id = None
        self.driver_exit_code = None
        self.job_id = None                  # Ray core job id, once a driver connects
        self.driver_info = None
        self.seq = seq
        # runtime, not in the API
        self.node = None
        self.gpu_ids = []
        self.placed = False
        self.supervisor_alive = True        # the JobSupervisor actor exists
        self.stop_requested = False
        self.stop_done = threading.Event()
        self.proc = None
        self.exited = False
        self.pgid = None
        self.watchdog = None
        self.log_path = None
        self.default_message()

    def default_message(self):
        # JobInfo.__post_init__ when message is None
        s = self.status
        if s == "PENDING":
            m = "Job has not started yet."
            if self.resources_specified:
                m += (" It may be waiting for resources "
                      "(CPUs, GPUs, memory, custom resources) to become available.")
            if self.runtime_env not in (None, {}):
                m += " It may be waiting for the runtime environment to be set up."
            self.message = m
        else:
            self.message = {
                "RUNNING": "Job is currently running.",
                "STOPPED": "Job was intentionally stopped.",
                "SUCCEEDED": "Job finished successfully.",
                "FAILED": "Job failed.",
            }[s]

    def details(self):
        # pydantic JobDetails.dict(), in its field order
        return {
            "type": "SUBMISSION",
            "job_id": self.job_id,
            "submission_id": self.submission_id,
            "driver_info": self.driver_info,
            "status": self.status,
            "entrypoint": self.entrypoint,
            "message": self.message,
            "error_type": self.error_type,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "metadata": self.metadata,
            "runtime_env": self.runtime_env,
            "driver_agent_http_address": self.driver_agent_http_address,
            "driver_node_id": self.driver_node_id,
            "driver_exit_code": self.driver_exit_code,
        }


class RuntimeEnvSetupError(Exception):
    pass


class SupervisorStartError(Exception):
    pass


class Cluster:
    def __init__(self, args, state_dir):
        self.args = args
        self.state_dir = state_dir
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.request_cls = make_request_class(args.ray_version)
        self.closing = False
        self.counters = {}
        self.faults = []
        if args.fail_next_submit_after_accept:
            self.faults.append({"route": "submit", "action": "drop_after_accept", "count": 1})
        self.reset()
        threading.Thread(target=self.scheduler, args=(self.gen,), daemon=True,
                         name="scheduler").start()

    def reset(self):
        """A fresh head: no jobs, no packages (the GCS is in memory upstream)."""
        a = self.args
        t = datetime.datetime.now()
        self.session_name = "session_%s_%06d_%d" % (
            t.strftime("%Y-%m-%d_%H-%M-%S"), t.microsecond, os.getpid())
        self.session_dir = os.path.join(self.state_dir, self.session_name)
        self.logs_dir = os.path.join(self.session_dir, "logs")
        self.gcs_dir = os.path.join(self.session_dir, "gcs_kv")
        os.makedirs(self.logs_dir, exist_ok=True)
        os.makedirs(self.gcs_dir, exist_ok=True)
        self.gen = getattr(self, "gen", 0) + 1
        self.jobs = {}
        self.seq = 0
        self.core_job_counter = 0
        self.unpack_locks = {}
        res = {"CPU": float(a.num_cpus), "GPU": float(a.num_gpus),
               "memory": float(a.memory), "object_store_memory": float(a.object_store_memory)}
        res.update({k: float(v) for k, v in json.loads(a.resources or "{}").items()})
        # --node-resources: one object per node (a KubeRay head and worker
        # groups differ); keys it leaves out take the uniform defaults above
        per_node = json.loads(a.node_resources) if a.node_resources else [{}] * a.nodes
        self.nodes = []
        for i, extra in enumerate(per_node):
            r = dict(res)
            r.update({k: float(v) for k, v in extra.items()})
            r["node:127.0.0.1"] = 1.0
            if i == 0:
                r["node:__internal_head__"] = 1.0
            self.nodes.append(Node(i, r, self.session_dir))

    def count(self, key):
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1

    # ---- packages: the GCS KV, a file per URI

    def pkg_path(self, uri):
        return os.path.join(self.gcs_dir, uri.encode().hex())

    def package_exists(self, uri):
        return os.path.exists(self.pkg_path(uri))

    def store_package(self, uri, data):
        tmp = self.pkg_path(uri) + ".tmp%d" % threading.get_ident()
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.pkg_path(uri))

    # ---- jobs

    def find(self, ident):
        """find_job_by_ids: a driver's core job id first, then a submission id."""
        for j in self.jobs.values():
            if j.job_id is not None and j.job_id == ident:
                return j
        return self.jobs.get(ident)

    def submit(self, req):
        sid = req.submission_id or req.job_id
        if sid is None:
            chars = sorted(set(string.ascii_letters + string.digits) - set("IloO0"))
            sid = "raysubmit_" + "".join(random.SystemRandom().choice(chars) for _ in range(16))
        res = {"CPU": float(getattr(req, "entrypoint_num_cpus", None) or 0),
               "GPU": float(getattr(req, "entrypoint_num_gpus", None) or 0),
               "memory": float(getattr(req, "entrypoint_memory", None) or 0)}
        for k, v in (getattr(req, "entrypoint_resources", None) or {}).items():
            res[k] = res.get(k, 0) + float(v)
        with self.lock:
            if sid in self.jobs:
                return None, sid
            self.seq += 1
            job = Job(sid, req, res, self.seq)
            job.gen = self.gen
            job.resources_specified = any(v > 0 for v in res.values()) or bool(
                getattr(req, "entrypoint_resources", None))
            job.default_message()
            job.log_path = os.path.join(self.logs_dir, "job-driver-%s.log" % urllib.parse.quote(sid, safe=""))
            self.jobs[sid] = job
            # JobManager.submit_job writes this through the driver logger
            t = datetime.datetime.now()
            with open(job.log_path, "a") as f:
                f.write("%s,%03d\tINFO job_manager.py:568 -- Runtime env is setting up.\n"
                        % (t.strftime("%Y-%m-%d %H:%M:%S"), t.microsecond // 1000))
            self.cond.notify_all()
        return job, sid

    def stop(self, job):
        """JobManager.stop_job: True while the supervisor actor exists; the stop
        itself is asynchronous. A PENDING job's actor is not running yet, so the
        stop waits in its queue (ray#58353); with --lose-pending-stops it is
        lost, as that issue reports it: True, and the job goes on to run."""
        with self.lock:
            if not job.supervisor_alive:
                return False
            if self.args.lose_pending_stops and job.status == "PENDING":
                return True
            if not job.stop_requested:
                job.stop_requested = True
                if job.proc is not None and not job.exited:
                    threading.Thread(target=self.kill_sequence, args=(job,), daemon=True).start()
            return True

    def put_status(self, job, status, message=None, error_type=None, exit_code=None):
        # JobInfoStorageClient.put_status: terminal states never change
        if job.status in TERMINAL:
            return
        job.status = status
        job.message = message
        job.error_type = error_type
        job.driver_exit_code = exit_code
        if message is None:
            job.default_message()
        if status in TERMINAL:
            job.end_time = now_ms()
            # the supervisor exits right after writing a terminal status
            job.supervisor_alive = False

    # ---- scheduling: the supervisor actor waits for its resources

    def place(self, job):
        if not job.resources_specified:
            candidates = [self.nodes[0]]    # hard affinity to the head node
        else:
            candidates = [n for n in self.nodes if n.fits(job.resources)
                          and all(n.labels.get(k) == v if not v.startswith("!")
                                  else n.labels.get(k) != v[1:]
                                  for k, v in job.label_selector.items())]
        if not candidates:
            return None
        # Ray's hybrid policy, roughly: pack in node order below half load,
        # then spread to the least loaded node.
        for n in candidates:
            if n.utilization_after(job.resources) <= 0.5:
                return n
        return min(candidates, key=lambda n: n.utilization_after(job.resources))

    def scheduler(self, gen):
        while True:
            with self.lock:
                if self.closing or gen != self.gen:
                    return
                timeout = self.args.job_start_timeout
                for job in sorted(self.jobs.values(), key=lambda j: j.seq):
                    if job.placed or job.status != "PENDING":
                        continue
                    if time.time() - job.start_time / 1000 > timeout:
                        self.start_timeout(job)
                        continue
                    node = self.place(job)
                    if node is None:
                        continue
                    for k, v in job.resources.items():
                        node.avail[k] = node.avail.get(k, 0) - v
                    if job.resources.get("GPU", 0) > 0:
                        n = max(1, math.ceil(job.resources["GPU"]))
                        job.gpu_ids = node.gpu_free[:n]
                        del node.gpu_free[:n]
                    job.node = node
                    job.placed = True
                    threading.Thread(target=self.supervise, args=(job,), daemon=True,
                                     name="supervisor-" + job.submission_id).start()
                self.cond.wait(1.0)

    def start_timeout(self, job):
        t = self.args.job_start_timeout
        msg = ("Job supervisor actor failed to start within %s seconds. This timeout can be "
               "configured by setting the environment variable RAY_JOB_START_TIMEOUT_SECONDS."
               % float(t))
        if job.resources_specified:
            msg += (" This may be because the job entrypoint's specified resources "
                    "(entrypoint_num_cpus, entrypoint_num_gpus, entrypoint_resources, "
                    "entrypoint_memory)aren't available on the cluster. Try checking the "
                    "cluster's available resources with `ray status` and specifying fewer "
                    "resources for the job entrypoint.")
        self.put_status(job, "FAILED", msg, "JOB_SUPERVISOR_ACTOR_START_TIMEOUT")
        job.supervisor_alive = False

    def release(self, job):
        with self.lock:
            if job.node is not None:
                for k, v in job.resources.items():
                    job.node.avail[k] = job.node.avail.get(k, 0) + v
                job.node.gpu_free.extend(job.gpu_ids)
                job.gpu_ids = []
                job.node = None
            job.supervisor_alive = False
            self.cond.notify_all()

    # ---- runtime_env (working_dir, py_modules, env_vars)

    def unpack(self, node, plugin, uri):
        """download_and_unpack_package: one directory per URI and node, shared
        by every job using it; gcs:// zips are unpacked as they are, remote
        zips lose a single top-level directory. extractall keeps no modes."""
        scheme, _, rest = uri.partition("://")
        if scheme not in ("gcs", "file", "https", "s3", "gs"):
            raise RuntimeEnvSetupError(
                'ValueError: Invalid protocol for runtime_env URI "%s". Supported protocols: '
                "['GCS', 'CONDA', 'PIP', 'UV', 'HTTPS', 'S3', 'GS', 'FILE']. Original error: "
                "'%s' is not a valid Protocol" % (uri, scheme))
        if scheme == "gcs":
            name = urllib.parse.urlparse(uri).netloc
        else:
            name = (scheme + "_" + rest).replace("/", "_").replace(":", "_")
            name = name.replace(".", "_", name.count(".") - 1)
        if not name.endswith(".zip") or name[:-4] in ("", ".", ".."):
            raise RuntimeEnvSetupError(
                "NotImplementedError: the emulator unpacks only .zip packages (%s); "
                "wheels need pip" % uri)
        base = os.path.join(node.resources_dir, plugin)
        local = os.path.join(base, name[:-4])
        with self.lock:
            lk = self.unpack_locks.setdefault(local, threading.Lock())
        with lk:
            if os.path.isdir(local):
                return local
            os.makedirs(base, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=base, prefix=".unpack-")
            try:
                if scheme == "gcs":
                    path = self.pkg_path(uri)
                    if not os.path.exists(path):
                        raise RuntimeEnvSetupError(
                            "OSError: Failed to download runtime_env file package %s from the "
                            "GCS to the Ray worker node. The package may have prematurely been "
                            "deleted from the GCS due to a long upload time or a problem with "
                            "Ray. Try setting the environment variable "
                            "RAY_RUNTIME_ENV_URI_PIN_EXPIRATION_S  to a value larger than the "
                            "upload time in seconds (the default is 600). If this fails, try "
                            "re-running after making any change to a file in the file package."
                            % uri)
                elif scheme == "file":
                    path = rest
                    if not os.path.exists(path):
                        raise RuntimeEnvSetupError(
                            "FileNotFoundError: [Errno 2] No such file or directory: '%s'" % path)
                else:
                    raise RuntimeEnvSetupError(
                        "ImportError: You must `pip install smart_open` to fetch %s URIs. "
                        "(the emulator cannot reach remote storage)" % scheme.upper())
                try:
                    with zipfile.ZipFile(path) as z:
                        z.extractall(tmp)
                        names = z.namelist()
                except (zipfile.BadZipFile, OSError) as e:
                    raise RuntimeEnvSetupError("%s: %s" % (type(e).__name__, e))
                if scheme != "gcs":
                    top = {n.split("/")[0] for n in names} - {"__MACOSX"}
                    if len(top) == 1 and all("/" in n for n in names):
                        (t,) = top
                        shutil.rmtree(os.path.join(tmp, "__MACOSX"), ignore_errors=True)
                        inner = os.path.join(tmp, t)
                        for c in os.listdir(inner):
                            os.rename(os.path.join(inner, c), os.path.join(tmp, c))
                        os.rmdir(inner)
                os.rename(tmp, local)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return local

    def setup_runtime_env(self, job):
        """Returns (cwd, env_vars) for the supervisor."""
        renv = job.runtime_env or {}
        env = {}
        ev = renv.get("env_vars")
        if ev is not None:
            if not isinstance(ev, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in ev.items()):
                raise SupervisorStartError(
                    "TypeError: runtime_env['env_vars'] must be of type Dict[str, str], got %s"
                    % type(ev))
            env.update(ev)
        wd = renv.get("working_dir")
        if wd is not None and not isinstance(wd, str):
            raise SupervisorStartError(
                "TypeError: working_dir must be a string or Path (either a local path or "
                "remote URI), got %s." % type(wd))
        mods = renv.get("py_modules")
        if mods is not None and not (isinstance(mods, list) and all(isinstance(m, str) for m in mods)):
            raise SupervisorStartError(
                "TypeError: py_modules must be a list of file paths, URIs, or imported "
                "modules, got %s." % type(mods))
        for key in ("pip", "conda", "uv", "container", "image_uri"):
            if renv.get(key):
                raise RuntimeEnvSetupError(
                    "the emulator cannot set up runtime_env['%s'] (no package installs)" % key)
        if self.args.setup_delay:
            time.sleep(self.args.setup_delay)
        cwd = job.node.home
        pythonpath = []
        if wd:
            if "://" not in wd:
                raise RuntimeEnvSetupError(
                    "ValueError: working_dir %s is not a URI; the client must upload local "
                    "directories first" % wd)
            cwd = self.unpack(job.node, "working_dir_files", wd)
            pythonpath.append(cwd)
        mod_dirs = [self.unpack(job.node, "py_modules_files", m) for m in (mods or [])]
        # working_dir's plugin runs before py_modules', each prepends itself
        pythonpath = mod_dirs + pythonpath
        if pythonpath:
            if "PYTHONPATH" in env:
                pythonpath.append(env["PYTHONPATH"])
            if os.environ.get("PYTHONPATH"):
                pythonpath.append(os.environ["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        return cwd, env

    # ---- the JobSupervisor

    def supervise(self, job):
        try:
            cwd, renv = self.setup_runtime_env(job)
        except (RuntimeEnvSetupError, SupervisorStartError) as e:
            with self.lock:
                if isinstance(e, RuntimeEnvSetupError):
                    msg = "runtime_env setup failed: Failed to set up runtime environment.\n%s" % e
                    etype = "RUNTIME_ENV_SETUP_FAILURE"
                else:
                    msg = ("Failed to start supervisor actor %s: '%s'. Full traceback:\n%s"
                           % (job.submission_id, e, fake_traceback(
                               [(SITE + "/dashboard/modules/job/job_manager.py", 600,
                                 "submit_job", "supervisor = self._supervisor_actor_cls.options(")],
                               str(e))))
                    etype = "JOB_SUPERVISOR_ACTOR_START_FAILURE"
                self.put_status(job, "FAILED", msg, etype)
                with open(job.log_path, "a") as f:
                    f.write(msg)
            self.release(job)
            return
        except Exception as e:   # a bug here must not leave the job PENDING forever
            with self.lock:
                self.put_status(job, "FAILED", "Unexpected error occurred: %s" % e,
                                "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE")
            self.release(job)
            return

        node = job.node
        env = dict(os.environ)
        env.update(renv)
        env["RAY_WORKER_NICENESS"] = "0"
        if not job.resources_specified:
            env["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] = "1"
        if job.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in job.gpu_ids)
        metadata = {"job_submission_id": job.submission_id, "job_name": job.submission_id}
        metadata.update(job.metadata or {})
        env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps(
            {"runtime_env": job.runtime_env or {}, "metadata": metadata})
        env["RAY_ADDRESS"] = "%s:6379" % node.ip
        env["PYTHONUNBUFFERED"] = "1"

        with self.lock:
            if self.closing or job.gen != self.gen:
                return
            # JobSupervisor.run: RUNNING is written before the entrypoint starts
            job.driver_agent_http_address = "http://%s:%d" % (node.ip, node.agent_port)
            job.driver_node_id = node.node_id
            self.put_status(job, "RUNNING")
            with open(job.log_path, "a") as log:
                log.write("Running entrypoint for job %s: %s\n" % (job.submission_id, job.entrypoint))
                log.flush()
                try:
                    job.proc = subprocess.Popen(
                        job.entrypoint, shell=True, executable="/bin/sh", cwd=cwd, env=env,
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True)
                except OSError as e:
                    job.proc = None
                    self.put_status(job, "FAILED", traceback.format_exc(),
                                    "JOB_ENTRYPOINT_COMMAND_START_ERROR")
                    log.write("%s\n" % e)
            if job.proc is None:
                self.release(job)
                return
            job.pgid = job.proc.pid
            # the supervisor's watchdog: kill -9 the group when its parent dies
            job.watchdog = subprocess.Popen(
                "while kill -s 0 %d; do sleep 1; done; kill -9 -%d" % (os.getpid(), job.pgid),
                shell=True, executable="/bin/sh", start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self.args.drivers_call_ray_init:
                self.core_job_counter += 1
                job.job_id = self.core_job_counter.to_bytes(4, "little").hex()
                job.driver_info = {"id": job.job_id, "node_ip_address": node.ip,
                                   "pid": str(job.proc.pid)}
            if job.stop_requested:
                threading.Thread(target=self.kill_sequence, args=(job,), daemon=True).start()

        rc = job.proc.wait()
        with self.lock:
            job.exited = True
            stopping = job.stop_requested
        if stopping:
            job.stop_done.wait()
        with self.lock:
            if stopping:
                self.put_status(job, "STOPPED")
            elif rc == 0:
                self.put_status(job, "SUCCEEDED", exit_code=0)
            else:
                tail = last_lines(job.log_path)
                if tail:
                    msg = ("Job entrypoint command failed with exit code %d, last available "
                           "logs (truncated to 20,000 chars):\n%s" % (rc, tail))
                else:
                    msg = "Job entrypoint command failed with exit code %d. No logs available." % rc
                self.put_status(job, "FAILED", msg, "JOB_ENTRYPOINT_COMMAND_ERROR", rc)
        # The supervisor exits; its watchdog then kills what is left of the group.
        kill_group(job.pgid, signal.SIGKILL)
        if job.watchdog is not None:
            try:
                job.watchdog.kill()
                job.watchdog.wait()
            except OSError:
                pass
        self.release(job)

    def kill_sequence(self, job):
        """JobSupervisor stop: the stop signal to the entrypoint and its
        descendants, wait RAY_JOB_STOP_WAIT_TIME_S, then SIGKILL."""
        try:
            pid = job.proc.pid
            name = os.environ.get("RAY_JOB_STOP_SIGNAL", "SIGTERM")
            sig = signal.SIGINT if name == "SIGINT" else signal.SIGTERM
            procs = [pid] + descendants(pid)
            for p in procs:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + self.args.stop_wait
            while time.monotonic() < deadline:
                if not any(alive(p) for p in procs):
                    break
                time.sleep(0.05)
            else:
                for p in procs:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
        finally:
            job.stop_done.set()

    def shutdown(self):
        """Every job dies with its group, as when the head node goes away."""
        with self.lock:
            self.closing = True
            jobs = list(self.jobs.values())
            self.cond.notify_all()
        for job in jobs:
            if job.pgid:
                for p in [job.pgid] + descendants(job.pgid):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                kill_group(job.pgid, signal.SIGKILL)
            if job.watchdog is not None:
                try:
                    job.watchdog.kill()
                except OSError:
                    pass

    def live_pids(self, job):
        if not job.pgid:
            return []
        out = set(p for p in descendants(job.pgid) if alive(p))
        out.update(pids_in_group(job.pgid))
        if alive(job.pgid):
            out.add(job.pgid)
        return sorted(out)

    # ---- /api/cluster_status (the v1 autoscaler monitor's load metrics)

    def usage(self):
        used, by_node = {}, {}
        for n in self.nodes:
            u = {}
            for k, t in n.total.items():
                if k.startswith("node:"):
                    continue
                u[k] = [t - n.avail.get(k, 0), t]
                agg = used.setdefault(k, [0.0, 0.0])
                agg[0] += u[k][0]
                agg[1] += u[k][1]
            by_node[n.node_id] = u
        return used, by_node


def last_lines(path):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()[-NUM_LOG_LINES_ON_ERROR:]
    except OSError:
        return ""
    return "".join(lines)[-MAX_LOG_SIZE:]


def proc_stat(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read()
        rest = s[s.rindex(b")") + 2:].split()
        return rest[0].decode(), int(rest[1]), int(rest[2])   # state, ppid, pgrp
    except (OSError, ValueError, IndexError):
        return None


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def all_stats():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                out[int(d)] = st
    return out


def descendants(root):
    children = {}
    for pid, (_, ppid, _) in all_stats().items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), ()):
            out.append(c)
            stack.append(c)
    return out


def pids_in_group(pgid):
    return [p for p, (state, _, g) in all_stats().items() if g == pgid and state not in ("Z", "X")]


def kill_group(pgid, sig):
    if pgid:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass


# --------------------------------------------------------------------------
# HTTP

class Dropped(Exception):
    pass


def to_camel(k):
    if not isinstance(k, str):
        return k
    parts = k.split("_")
    return parts[0] + "".join(x.title() for x in parts[1:])


def google_style(d):
    # dashboard utils.to_google_style: every key, recursively
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = google_style(v)
        elif isinstance(v, list):
            v = [google_style(i) if isinstance(i, dict) else i for i in v]
        out[to_camel(k)] = v
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Python/3.11 aiohttp/3.11.18"
    sys_version = ""

    def log_message(self, *args):
        pass

    def version_string(self):
        return self.server_version

    @property
    def cluster(self):
        return self.server.cluster

    # -- plumbing

    def reply(self, code, body=b"", ctype="text/plain; charset=utf-8", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        if ctype and (body or code != 200):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def text(self, code, s):
        self.reply(code, s)

    def json(self, obj, code=200, headers=()):
        self.reply(code, json.dumps(obj), "application/json; charset=utf-8", headers)

    def drop(self):
        """Close the connection without an answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise Dropped()

    def read_body(self, limit=DASHBOARD_CLIENT_MAX_SIZE):
        """Returns the body, or None when it reached aiohttp's client_max_size
        (the rest is drained so the answer can be read)."""
        if getattr(self, "_body", None) is not None:
            return self._body
        chunks, size, over = [], 0, False
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                while n:
                    c = self.rfile.read(min(n, 1 << 16))
                    if not c:
                        raise Dropped()
                    n -= len(c)
                    size += len(c)
                    if size >= limit:
                        over = True
                    if not over:
                        chunks.append(c)
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            while n:
                c = self.rfile.read(min(n, 1 << 16))
                if not c:
                    raise Dropped()
                n -= len(c)
                size += len(c)
                if size >= limit:
                    over = True
                if not over:
                    chunks.append(c)
        self._body_size = size
        if over:
            self._body = None
            return None
        self._body = b"".join(chunks)
        return self._body

    def too_large(self):
        return ("Maximum request body size %d exceeded, actual body size %d"
                % (DASHBOARD_CLIENT_MAX_SIZE, self._body_size))

    # -- dispatch

    def handle_any(self):
        self._body = None
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        self.query = dict(urllib.parse.parse_qsl(url.query))
        try:
            if path.startswith("/_emulator/"):
                return self.control(path)
            c = self.cluster
            if c.args.down_until and time.monotonic() < c.args.down_until:
                self.drop()
            route, params, allowed = self.route(path)
            fault = self.take_fault(route)
            if fault and fault["action"] == "delay":
                time.sleep(float(fault.get("seconds", 1)))
            elif fault and fault["action"] == "drop":
                self.read_body()
                self.drop()
            elif fault and fault["action"] == "status":
                self.read_body()
                return self.text(int(fault.get("status", 500)), fault.get("body", AIOHTTP_500))
            # middlewares, in http_server_head.py's order: token auth, then the browser guard
            if c.auth_enabled and path not in PUBLIC_EXACT_PATHS and not path.startswith(PUBLIC_PREFIXES):
                h = self.headers.get("Authorization", "")
                if not h:
                    h = self.headers.get("X-Ray-Authorization", "")
                if not h:
                    cookie = self.cookie("ray-authentication-token")
                    if cookie:
                        h = "Bearer " + cookie
                if not h:
                    self.close_if_unread()
                    return self.text(401, "Unauthorized: Missing authentication token")
                if h != "Bearer " + c.args.auth_token:
                    self.close_if_unread()
                    return self.text(403, "Forbidden: Invalid authentication token")
            if route is None:
                self.close_if_unread()
                if allowed:
                    return self.reply(405, "405: Method Not Allowed",
                                      headers=[("Allow", ",".join(sorted(allowed)))])
                return self.text(404, "404: Not Found")
            if self.command in ("POST", "PUT") and path != "/api/authenticate" and self.is_browser():
                self.close_if_unread()
                return self.text(405, "Method Not Allowed for browser traffic.")
            c.count(route)
            if fault and fault["action"] == "drop_after_accept":
                # do the work, then lose the answer
                self.wfile = io.BytesIO()
                getattr(self, "r_" + route)(*params)
                self.drop()
            getattr(self, "r_" + route)(*params)
        except Dropped:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def cookie(self, name):
        for part in self.headers.get("Cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None

    def is_browser(self):
        return (self.headers.get("User-Agent", "").startswith("Mozilla")
                or any(h in self.headers for h in BROWSER_HEADERS))

    def close_if_unread(self):
        if self._body is None and (self.headers.get("Content-Length", "0") not in ("", "0")
                                   or self.headers.get("Transfer-Encoding")):
            self.close_connection = True

    def take_fault(self, route):
        c = self.cluster
        with c.lock:
            for f in c.faults:
                if f.get("count", 1) > 0 and f.get("route") in (route, "*"):
                    if f["action"] == "drop_after_accept" and route is None:
                        continue
                    f["count"] = f.get("count", 1) - 1
                    return dict(f)
        return None

    def route(self, path):
        """(route, params, allowed methods on this path)."""
        m = self.command
        if m == "HEAD":
            m = "GET"
        seg = path.split("/")
        table = []
        c = self.cluster
        if path == "/api/version":
            table = [("GET", "version", ())]
        elif path == "/api/authentication_mode" and c.has_auth_mode:
            table = [("GET", "auth_mode", ())]
        elif path in ("/api/gcs_healthz", "/api/healthz"):
            table = [("GET", "healthz", ())]
        elif path == "/api/cluster_status":
            table = [("GET", "cluster_status", ())]
        elif path == "/api/jobs/":
            table = [("GET", "list", ()), ("POST", "submit", ())]
        elif len(seg) == 5 and seg[1:3] == ["api", "packages"] and seg[3] and seg[4]:
            p = (urllib.parse.unquote(seg[3]), urllib.parse.unquote(seg[4]))
            table = [("GET", "package_get", p), ("PUT", "package_put", p)]
        elif len(seg) >= 4 and seg[1:3] == ["api", "jobs"] and seg[3]:
            ident = (urllib.parse.unquote(seg[3]),)
            rest = seg[4:]
            if rest == []:
                table = [("GET", "get", ident), ("DELETE", "delete", ident)]
            elif rest == ["logs"]:
                table = [("GET", "logs", ident)]
            elif rest == ["stop"]:
                table = [("POST", "stop", ident)]
            elif rest == ["logs", "tail"]:
                table = [("GET", "tail", ident)]
        for meth, name, params in table:
            if meth == m:
                return name, params, None
        return None, (), {meth for meth, _, _ in table}

    # -- routes

    def r_version(self):
        a = self.cluster.args
        self.json({"version": a.jobs_api_version, "ray_version": a.ray_version,
                   "ray_commit": hashlib.sha1(a.ray_version.encode()).hexdigest(),
                   "session_name": self.cluster.session_name})

    def r_auth_mode(self):
        if self.cluster.auth_enabled:
            return self.json({"authentication_mode": "token"})
        self.json({"authentication_mode": "disabled"}, headers=[(
            "Set-Cookie", 'ray-authentication-token=""; Max-Age=0; Path=/')])

    def r_healthz(self):
        self.text(200, "success")

    def r_cluster_status(self):
        c = self.cluster
        with c.lock:
            usage, by_node = c.usage()
            pending = [[j.resources, 1] for j in c.jobs.values()
                       if j.status == "PENDING" and not j.placed and j.resources_specified]
        if self.query.get("format", "0") == "1":
            lines = ["======== Autoscaler status: %s ========" % datetime.datetime.now(),
                     "Node status", "-" * 63, "Active:"]
            lines += [" 1 node_%s" % n.node_id for n in c.nodes]
            lines += ["Pending:", " (no pending nodes)", "Recent failures:", " (no failures)",
                      "", "Resources", "-" * 63, "Usage:"]
            for k in sorted(usage):
                u, t = usage[k]
                if "memory" in k:
                    lines.append(" %.2fGiB/%.2fGiB %s" % (u / 2**30, t / 2**30, k))
                else:
                    lines.append(" %.1f/%.1f %s" % (u, t, k))
            lines += ["", "Demands:"]
            lines += [" %s: %d+ pending tasks/actors" % (json.dumps(r), n) for r, n in pending] \
                or [" (no resource demands)"]
            return self.json({"result": True, "msg": "Got formatted cluster status.",
                              "data": {"clusterStatus": "\n".join(lines)}})
        status = None
        if not c.args.no_autoscaler_status:
            status = {
                "load_metrics_report": {
                    "usage": usage, "resource_demand": pending, "pg_demand": [],
                    "request_demand": [], "node_types": [[{"CPU": c.args.num_cpus}, len(c.nodes)]],
                    "head_ip": "127.0.0.1", "usage_by_node": by_node,
                },
                "time": time.time(), "monitor_pid": os.getpid(),
            }
        self.json({"result": True, "msg": "Got cluster status.", "data": google_style({
            "autoscaling_status": None, "autoscaling_error": None, "cluster_status": status})})

    def r_package_get(self, protocol, name):
        uri = "%s://%s" % (protocol, name)
        # pin_runtime_env_uri (in a try), then package_exists, which raises
        # for anything but gcs:// outside the try: aiohttp's bare 500.
        if protocol != "gcs":
            return self.text(500, AIOHTTP_500)
        if not self.cluster.package_exists(uri):
            return self.text(404, "Package %s does not exist" % uri)
        self.reply(200)

    def r_package_put(self, protocol, name):
        c = self.cluster
        uri = "%s://%s" % (protocol, name)
        data = self.read_body()
        if data is None:
            if vtuple(c.args.ray_version) >= (2, 45, 0):
                # the subprocess-module proxy reads the body outside any try
                self.close_connection = True
                return self.text(413, self.too_large())
            return self.text(500, fake_traceback(
                [(SITE + "/dashboard/modules/job/job_head.py", 268, "upload_package",
                  "data = await req.read()")],
                "aiohttp.web_exceptions.HTTPRequestEntityTooLarge: " + self.too_large()))
        frames = [(SITE + "/dashboard/modules/job/job_head.py", 270, "upload_package",
                   "await get_or_create_event_loop().run_in_executor("),
                  (SITE + "/_private/runtime_env/packaging.py", 570, "upload_package_to_gcs",
                   "_store_package_in_gcs(pkg_uri, pkg_bytes)")]
        if protocol != "gcs":
            if protocol in ("https", "s3", "gs", "file"):
                last = "ValueError: upload_package_to_gcs should not be called with a remote path."
            else:
                last = ('ValueError: Invalid protocol for runtime_env URI "%s". Supported '
                        "protocols: ['GCS', 'CONDA', 'PIP', 'UV', 'HTTPS', 'S3', 'GS', 'FILE']. "
                        "Original error: '%s' is not a valid Protocol" % (uri, protocol))
            return self.text(500, fake_traceback(frames[:1], last))
        if c.args.strict_package_names and not valid_pkg_name(name):
            # not upstream: the server never checks names
            return self.text(500, fake_traceback(
                frames, "ValueError: (emulator --strict-package-names) package name %r is not "
                "_ray_pkg_<hex>.zip" % name))
        if len(data) >= c.args.gcs_max_size:
            size = "%.2fMiB" % (len(data) / MiB)
            return self.text(500, fake_traceback(frames + [
                (SITE + "/_private/runtime_env/packaging.py", 420, "_store_package_in_gcs",
                 "raise ValueError(")],
                "ValueError: Package size (%s) exceeds the maximum size of %.2fMiB. You can "
                "exclude large files using the 'excludes' option to the runtime_env or provide "
                "a remote URI of a zip file using protocols such as 's3://', 'https://' and so "
                "on, refer to https://docs.ray.io/en/latest/ray-core/handling-dependencies.html"
                "#api-reference." % (size, c.args.gcs_max_size / MiB)))
        c.store_package(uri, data)
        c.count("package_put_ok")
        self.reply(200)

    def r_submit(self):
        c = self.cluster
        body = self.read_body()
        if body is None:
            self.close_connection = True
            return self.text(413, self.too_large())
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise AttributeError("'%s' object has no attribute 'items'" % type(data).__name__)
        except (ValueError, AttributeError):
            # await req.json() and strip_keys_with_value_none run outside the
            # handler's try: aiohttp answers its own 500
            return self.text(500, AIOHTTP_500)
        req = validate_submit(c.request_cls, data)
        if isinstance(req, str):
            return self.text(400, req)
        job, sid = c.submit(req)
        if job is None:
            agent_tb = fake_traceback(
                [(SITE + "/dashboard/modules/job/job_agent.py", 45, "submit_job",
                  "submission_id = await self.get_job_manager().submit_job("),
                 (SITE + "/dashboard/modules/job/job_manager.py", 555, "submit_job",
                  "raise ValueError(")],
                "ValueError: Job with submission_id %s already exists. Please use a different "
                "submission_id." % sid)
            return self.text(500, agent_error_at_head(
                400, agent_tb, "submit_job",
                "resp = await job_agent_client.submit_job_internal(submit_request)"))
        self.json({"job_id": sid, "submission_id": sid})

    def r_list(self):
        c = self.cluster
        with c.lock:
            jobs = [j.details() for j in c.jobs.values()]
        random.shuffle(jobs)   # the GCS KV's key order: no order to rely on
        self.json(jobs)

    def find_or_404(self, ident):
        with self.cluster.lock:
            job = self.cluster.find(ident)
        if job is None:
            self.text(404, "Job %s does not exist" % ident)
        return job

    def r_get(self, ident):
        job = self.find_or_404(ident)
        if job:
            with self.cluster.lock:
                d = job.details()
            self.json(d)

    def r_logs(self, ident):
        job = self.find_or_404(ident)
        if not job:
            return
        # no driver agent address yet (PENDING, or failed before running): ""
        if job.driver_agent_http_address is None:
            return self.json({"logs": ""})
        try:
            with open(job.log_path, errors="replace") as f:
                logs = f.read()
        except OSError:
            logs = ""
        self.json({"logs": logs})

    def r_stop(self, ident):
        job = self.find_or_404(ident)
        if job:
            self.json({"stopped": self.cluster.stop(job)})

    def r_delete(self, ident):
        c = self.cluster
        job = self.find_or_404(ident)
        if not job:
            return
        with c.lock:
            if job.status not in TERMINAL:
                agent_tb = fake_traceback(
                    [(SITE + "/dashboard/modules/job/job_agent.py", 112, "delete_job",
                      "deleted = await self.get_job_manager().delete_job(job.submission_id)"),
                     (SITE + "/dashboard/modules/job/job_manager.py", 640, "delete_job",
                      "raise RuntimeError(")],
                    "RuntimeError: Attempted to delete job '%s', but it is in a non-terminal "
                    "state %s." % (job.submission_id, job.status))
                return self.text(500, agent_error_at_head(
                    500, agent_tb, "delete_job",
                    "resp = await job_agent_client.delete_job_internal(job.submission_id)"))
            del c.jobs[job.submission_id]   # the log file stays on disk
        self.json({"deleted": True})

    def r_tail(self, ident):
        job = self.find_or_404(ident)
        if not job:
            return
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            # aiohttp's WebSocketResponse.prepare on a plain GET
            return self.text(400, "No WebSocket UPGRADE hdr: None\n Can \"Upgrade\" only to "
                                  "\"WebSocket\".")
        self.ws_tail(job, key)

    def ws_tail(self, job, key):
        """The log tail: text frames of whole lines from the start of the file,
        a normal close (1000) once the job is terminal and the file read."""
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

        def frame(opcode, payload):
            n = len(payload)
            if n < 126:
                head = bytes([0x80 | opcode, n])
            elif n < 65536:
                head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
            else:
                head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
            self.wfile.write(head + payload)
            self.wfile.flush()

        # the head waits for the driver's agent address, checking each second
        while job.driver_agent_http_address is None:
            if job.status in TERMINAL:
                return frame(0x8, (1000).to_bytes(2, "big"))
            time.sleep(1)
        pos, finished = 0, False
        while True:
            try:
                with open(job.log_path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
            except OSError:
                data = b""
            cut = data.rfind(b"\n") + 1
            if cut:
                frame(0x1, data[:cut])
                pos += cut
            elif finished:
                if data:
                    frame(0x1, data)
                return frame(0x8, (1000).to_bytes(2, "big"))
            else:
                if job.status in TERMINAL:
                    finished = True   # read once more what was written before the end
                time.sleep(0.2)

    # -- emulator control (not upstream): no auth, no faults

    def control(self, path):
        c = self.cluster
        body = self.read_body() or b""
        if path == "/_emulator/state":
            with c.lock:
                jobs = [{"submission_id": j.submission_id, "status": j.status,
                         "node": j.node.index if j.node else None,
                         "pgid": j.pgid, "live_pids": c.live_pids(j)} for j in c.jobs.values()]
                packages = sorted(bytes.fromhex(n).decode() for n in os.listdir(c.gcs_dir)
                                  if ".tmp" not in n)
                return self.json({"jobs": jobs, "packages": packages,
                                  "counters": dict(c.counters), "session_name": c.session_name,
                                  "state_dir": c.state_dir})
        if path == "/_emulator/faults" and self.command == "POST":
            spec = json.loads(body or b"[]")
            with c.lock:
                c.faults.extend(spec if isinstance(spec, list) else [spec])
            return self.json({"faults": c.faults})
        if path == "/_emulator/faults" and self.command == "DELETE":
            with c.lock:
                c.faults = []
            return self.json({"faults": []})
        if path == "/_emulator/restart" and self.command == "POST":
            spec = json.loads(body or b"{}")
            c.shutdown()
            with c.lock:
                c.closing = False
                c.reset()
                c.args.down_until = time.monotonic() + float(spec.get("downtime", 0))
                threading.Thread(target=c.scheduler, args=(c.gen,), daemon=True,
                                 name="scheduler").start()
            return self.json({"session_name": c.session_name})
        self.text(404, "404: Not Found")

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)


def valid_pkg_name(name):
    if not (name.startswith("_ray_pkg_") and name.endswith(".zip")):
        return False
    h = name[len("_ray_pkg_"):-len(".zip")]
    return len(h) > 0 and all(ch in "0123456789abcdef" for ch in h)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


def parse_args(argv):
    p = argparse.ArgumentParser(description="Ray dashboard Job API emulator")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ray-version", default=None)
    p.add_argument("--jobs-api-version", default="4")
    p.add_argument("--old", action="store_true",
                   help="an older Ray: no /api/authentication_mode (default version 2.47.1)")
    p.add_argument("--auth-token", default=None)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 2))
    p.add_argument("--num-gpus", type=float, default=0)
    p.add_argument("--memory", type=int, default=8 * 1024**3)
    p.add_argument("--object-store-memory", type=int, default=2 * 1024**3)
    p.add_argument("--resources", default=None, help='custom resources per node, JSON')
    p.add_argument("--node-resources", default=None,
                   help='JSON list, one resource object per node (replaces --nodes)')
    p.add_argument("--state-dir", default=None)
    p.add_argument("--stop-wait", type=float,
                   default=float(os.environ.get("RAY_JOB_STOP_WAIT_TIME_S", 3)))
    p.add_argument("--setup-delay", type=float, default=0.0,
                   help="seconds of runtime_env set-up per job (PENDING meanwhile)")
    p.add_argument("--job-start-timeout", type=float,
                   default=float(os.environ.get("RAY_JOB_START_TIMEOUT_SECONDS", 900)))
    p.add_argument("--gcs-max-size", type=int, default=GCS_STORAGE_MAX_SIZE)
    p.add_argument("--drivers-call-ray-init", action="store_true",
                   help="give each running submission a core job id, as ray.init() would")
    p.add_argument("--no-autoscaler-status", action="store_true",
                   help="/api/cluster_status without the v1 monitor's cluster_status")
    p.add_argument("--strict-package-names", action="store_true",
                   help="refuse package names other than _ray_pkg_<hex>.zip (not upstream)")
    p.add_argument("--fail-next-submit-after-accept", action="store_true")
    p.add_argument("--lose-pending-stops", action="store_true",
                   help="a stop of a PENDING job answers true and does nothing (ray#58353)")
    p.add_argument("--max-life", type=float, default=3600.0)
    p.add_argument("--ignore-stdin", action="store_true")
    a = p.parse_args(argv)
    if a.ray_version is None:
        a.ray_version = "2.47.1" if a.old else "2.52.0"
    a.down_until = 0.0
    if a.auth_token is not None and (a.old or vtuple(a.ray_version) < (2, 52, 0)):
        p.error("token auth needs Ray >= 2.52.0 (and not --old)")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    own_state = args.state_dir is None
    state_dir = tempfile.mkdtemp(prefix="ray-dashboard-") if own_state else args.state_dir
    os.makedirs(state_dir, exist_ok=True)
    cluster = Cluster(args, os.path.abspath(state_dir))
    cluster.auth_enabled = args.auth_token is not None
    cluster.has_auth_mode = not args.old and vtuple(args.ray_version) >= (2, 52, 0)
    server = Server(("127.0.0.1", args.port), Handler)
    server.cluster = cluster
    print("listening http://127.0.0.1:%d" % server.server_address[1], flush=True)

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
    cluster.shutdown()
    server.shutdown()
    server.server_close()
    if own_state:
        shutil.rmtree(state_dir, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
