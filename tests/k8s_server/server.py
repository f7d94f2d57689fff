"""The stand-in Kubernetes API server: ThreadingHTTPServer on 127.0.0.1, an ephemeral port.

Where the provider depends on it, it behaves as a Kubernetes 1.37 API server does:

* ``Authorization: Bearer <token>`` other than the server's token: 401, a ``Status``.
* ``POST /apis/batch/v1/namespaces/{ns}/jobs``: 201 with the Job as stored (uid,
  resourceVersion, creationTimestamp, an empty status); a taken name: 409 ``AlreadyExists``;
  a body the client's ``V1Job`` model refuses: 422 ``Invalid``; a namespace holding
  ``job_quota`` Jobs already: 403 ``Forbidden``, "exceeded quota", as a ResourceQuota on
  ``count/jobs.batch`` answers.
* ``GET .../jobs?labelSelector=k=v,...``: a ``JobList`` of the namespace's Jobs carrying
  those labels (equality selectors only, what the provider sends).
* ``GET .../jobs/{name}`` and ``.../jobs/{name}/status``: the Job; absent: 404 ``NotFound``.
* ``DELETE .../jobs/{name}``: 200 with a ``Success`` Status (stand-in: no finalizers, so
  the Job is gone at once, as with ``propagationPolicy: Background``); absent: 404.
* ``GET /apis/batch/v1``: the ``APIResourceList`` of batch/v1 (discovery).
* *Stand-in*: no pods run; ``finish(name, succeeded)`` sets the Job's final condition,
  a new Job is ``active: 1`` (a pod running).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

_JOBS = re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[a-z0-9-]+)/jobs(?:/(?P<name>[a-z0-9.-]+))?(?P<status>/status)?$")
_PRIMITIVES = {"str", "int", "float", "bool", "object", "datetime", "date"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_model(data: Any, type_name: str, where: str = "") -> Any:
    """``data`` deserialized into the client's model ``type_name``; any key the model does not have fails.

    The client's own deserializer ignores unknown keys and raises on missing required ones
    (its models' client-side validation); the walk adds the refusal of unknown keys.
    """
    import kubernetes.client as models
    from kubernetes.client import ApiClient

    _unknown_keys(data, type_name, where or type_name, models)
    return ApiClient()._ApiClient__deserialize(data, type_name)


def _unknown_keys(data: Any, type_name: str, where: str, models) -> None:
    if data is None or type_name in _PRIMITIVES:
        return
    listed = re.fullmatch(r"[Ll]ist\[(.+)\]", type_name)
    if listed:
        for index, item in enumerate(data):
            _unknown_keys(item, listed[1], f"{where}[{index}]", models)
        return
    mapped = re.fullmatch(r"[Dd]ict[\[(][^,]+, (.+)[\])]", type_name)
    if mapped:
        for key, item in data.items():
            _unknown_keys(item, mapped[1], f"{where}.{key}", models)
        return
    model = getattr(models, type_name)
    by_json = {json_key: model.openapi_types[attr] for attr, json_key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    if unknown:
        raise ValueError(f"{where}: {type_name} has no field(s) {', '.join(unknown)}")
    for key, value in data.items():
        _unknown_keys(value, by_json[key], f"{where}.{key}", models)


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A ``v1 Status`` as the API server answers an error (or a deletion) with."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 400 else "Success",
            "message": message, "reason": reason, "code": code}
    if details is not None:
        body["details"] = details
    if code < 400:
        del body["message"], body["reason"]
    return body


class _Refused(Exception):
    def __init__(self, code: int, body: dict) -> None:
        super().__init__(code)
        self.code, self.body = code, body


class KubernetesStandIn:
    """The stand-in: ``start()``, ``url``, ``token``, ``jobs`` (by (namespace, name)), ``requests`` (method, path)."""

    def __init__(self, token: str = "stand-in-token") -> None:
        self.token = token
        self.jobs: dict[tuple[str, str], dict] = {}
        self.job_quota: int | None = None
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubernetesStandIn:
        handler = type("Handler", (_Handler,), {"stand_in": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> KubernetesStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def kubeconfig(self, token: str | None = None) -> dict:
        """A kubeconfig naming this server and a user with ``token`` (default: the right one)."""
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in", "preferences": {},
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": token or self.token}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester"}}],
        }

    def finish(self, namespace: str, name: str, succeeded: bool) -> None:
        """Play the Job controller: the Job's pod ended, the Job is Complete or Failed."""
        with self._lock:
            status = self.jobs[(namespace, name)]["status"]
            status.pop("active", None)
            status["succeeded" if succeeded else "failed"] = 1
            status["completionTime" if succeeded else "startTime"] = _now()
            status["conditions"] = [{"type": "Complete" if succeeded else "Failed", "status": "True",
                                     "lastProbeTime": _now(), "lastTransitionTime": _now()}]

    # --- the API ------------------------------------------------------------------------

    def handle(self, method: str, path: str, authorization: str | None, body: bytes,
               query: str = "") -> tuple[int, dict]:
        with self._lock:
            self.requests.append((method, path))
            if authorization != f"Bearer {self.token}":
                return 401, status_object(401, "Unauthorized", "Unauthorized")
            try:
                return self._route(method, path, body, query)
            except _Refused as refused:
                return refused.code, refused.body
            except Exception as exc:  # a bug of the stand-in: an answer, not a dropped connection
                return 500, status_object(500, "InternalError", f"stand-in error: {exc!r}")

    def _route(self, method: str, path: str, body: bytes, query: str) -> tuple[int, dict]:
        if method == "GET" and path == "/apis/batch/v1":
            return 200, self._discovery()
        found = _JOBS.match(path)
        if not found:
            raise _Refused(404, status_object(404, "NotFound", "the server could not find the requested resource"))
        namespace, name = found["ns"], found["name"]
        if method == "POST" and name is None:
            return 201, self._create(namespace, json.loads(body))
        if method == "GET" and name is None:
            return 200, self._list(namespace, parse_qs(query).get("labelSelector", [""])[0])
        if name is not None and method == "GET":
            return 200, self._job(namespace, name)
        if name is not None and method == "DELETE" and not found["status"]:
            self._job(namespace, name)
            del self.jobs[(namespace, name)]
            return 200, status_object(200, "", "", {"name": name, "group": "batch", "kind": "jobs",
                                                    "uid": str(uuid.uuid4())})
        raise _Refused(405, status_object(405, "MethodNotAllowed", f"{method} is not supported on {path}"))

    def _create(self, namespace: str, job: dict) -> dict:
        try:
            check_model(job, "V1Job")
        except (ValueError, TypeError) as exc:
            raise _Refused(422, status_object(422, "Invalid", f"Job is invalid: {exc}")) from None
        name = job["metadata"]["name"]
        used = sum(1 for held, _ in self.jobs if held == namespace)
        if self.job_quota is not None and used >= self.job_quota:
            raise _Refused(403, status_object(
                403, "Forbidden",
                f'jobs.batch "{name}" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, '
                f"used: count/jobs.batch={used}, limited: count/jobs.batch={self.job_quota}",
                {"name": name, "group": "batch", "kind": "jobs"}))
        if (namespace, name) in self.jobs:
            raise _Refused(409, status_object(409, "AlreadyExists", f'jobs.batch "{name}" already exists',
                                              {"name": name, "group": "batch", "kind": "jobs"}))
        stored = json.loads(json.dumps(job))
        stored["metadata"].update({"namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                                   "creationTimestamp": _now(), "generation": 1})
        stored["status"] = {"active": 1, "startTime": _now()}
        self.jobs[(namespace, name)] = stored
        return stored

    def _list(self, namespace: str, selector: str) -> dict:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        if any(key.endswith("!") for key in wanted):
            raise _Refused(400, status_object(400, "BadRequest", "stand-in: only k=v label selectors"))
        items = [job for (held, _), job in sorted(self.jobs.items()) if held == namespace
                 and all(job["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        return {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "1"}, "items": items}

    def _job(self, namespace: str, name: str) -> dict:
        job = self.jobs.get((namespace, name))
        if job is None:
            raise _Refused(404, status_object(404, "NotFound", f'jobs.batch "{name}" not found',
                                              {"name": name, "group": "batch", "kind": "jobs"}))
        return job

    @staticmethod
    def _discovery() -> dict:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "batch/v1", "resources": [
            {"name": "cronjobs", "singularName": "cronjob", "namespaced": True, "kind": "CronJob", "verbs": verbs},
            {"name": "jobs", "singularName": "job", "namespaced": True, "kind": "Job", "verbs": verbs},
            {"name": "jobs/status", "singularName": "", "namespaced": True, "kind": "Job",
             "verbs": ["get", "patch", "update"]},
        ]}


class _Handler(BaseHTTPRequestHandler):
    stand_in: KubernetesStandIn

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        code, payload = self.stand_in.handle(self.command, path.rstrip("/"), self.headers.get("Authorization"), body,
                                             query)
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve
