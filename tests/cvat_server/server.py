"""The stand-in CVAT server: ThreadingHTTPServer on 127.0.0.1, an ephemeral port.

Where the project depends on it, it behaves as CVAT 2.80 does:

* Background requests (task data, exports) go queued -> started -> finished over
  ``request_polls + 1`` polls of ``GET /api/requests/{id}``; their work (the task's
  frames, the export's archive) is done when they finish, as CVAT's workers do it.
* An export format CVAT does not know is refused with 400 (``EXPORT_FORMATS`` are known;
  *stand-in*: only COCO 1.0 can be produced, so it is the only one known).
* Cookie sessions (a password login) need the ``X-CSRFToken`` header to write (403).
* JSON request bodies are validated against cvat-sdk's own request models (400).
* Listings paginate (``page_size``, or the ``page_size`` query), 404 past the last page.
* Faults: 401, 429, 500, 502, 503, 504, a connection dropped before the request is
  handled (``dropped``) or after, its answer lost (``dropped_after``); at the n-th
  matching request (``inject(..., skip=n)``) or at random (``inject_randomly``).
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import io
import json
import random
import re
import secrets
import socket
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

PAGE_SIZE = 10
#: fault -> the HTTP status answered instead of the real answer
FAULT_STATUSES = {"unauthorized": 401, "throttled": 429, "server_error": 500, "bad_gateway": 502,
                  "unavailable": 503, "gateway_timeout": 504}
#: faults that close the connection with no answer: before the request is handled, or after (answer lost)
DROPS = ("dropped", "dropped_after")
FAULTS = (*FAULT_STATUSES, *DROPS)
#: what proxies and load balancers in front of CVAT do to a request, for ``inject_randomly``
TRANSPORT_FAULTS = ("bad_gateway", "unavailable", "gateway_timeout", "dropped", "dropped_after")
EXPORT_FORMATS = ("COCO 1.0",)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Fault:
    kind: str  # one of FAULTS
    method: str | None
    path_prefix: str
    times: int
    skip: int = 0  # matching requests let through first


class HttpError(Exception):
    """Answer ``status`` with ``body`` instead (raised by a handler)."""

    def __init__(self, status: int, body) -> None:
        super().__init__(status, body)
        self.status, self.body = status, body


@dataclass
class Task:
    id: int
    name: str
    project_id: int | None
    segment_size: int
    frames: list[str] = field(default_factory=list)
    shapes: list[dict] = field(default_factory=list)
    tags: list[dict] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    pending_files: dict[str, bytes] = field(default_factory=dict)
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Job:
    id: int
    task_id: int
    start_frame: int
    stop_frame: int
    state: str = "new"
    stage: str = "annotation"
    assignee: str | None = None


class CvatStandIn:
    """In-memory CVAT: projects, labels, tasks, jobs, uploads, requests, annotations, exports."""

    def __init__(
        self,
        *,
        version: str = "2.80.0",
        users: dict[str, str] | None = None,
        tokens: set[str] | None = None,
        request_polls: int = 2,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.version = version
        self.users = dict(users or {"annotator": "secret"})
        self.tokens = set(tokens or {"test-token"})
        #: polls of a background request answered (queued, then started) before the one that finishes it
        self.request_polls = request_polls
        self.page_size = page_size
        self.sessions: dict[str, str] = {}  # session id -> its CSRF token
        #: Every secret a login handed out (session ids, CSRF tokens, keys): none may be written anywhere.
        self.issued_secrets: set[str] = set()
        self.projects: dict[int, dict] = {}
        self.labels: dict[int, dict] = {}
        self.tasks: dict[int, Task] = {}
        self.jobs: dict[int, Job] = {}
        self.requests: dict[str, dict] = {}
        self.exports: dict[str, bytes] = {}
        self.faults: list[Fault] = []
        self._random_faults: tuple[float, tuple[str, ...], random.Random] | None = None
        #: (kind, method, path) of every fault answered
        self.injected: list[tuple[str, str, str]] = []
        self.export_mode = "normal"  # normal | fails | never_finishes
        self.requests_log: list[tuple[str, str]] = []
        self._ids = iter(range(1, 10**9))
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> CvatStandIn:
        handler = type("Handler", (_Handler,), {"cvat": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: stop() returns within it, not within the default 0.5 s.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> CvatStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the annotator ----------------------------------------------------------------

    def task_by_name(self, name: str) -> Task:
        return next(t for t in self.tasks.values() if t.name == name)

    def annotate(self, task_id: int, frame_name: str, boxes: list[tuple[str, float, float, float, float]]) -> None:
        """Draw rectangles (label, x1, y1, x2, y2) on a frame."""
        task = self.tasks[task_id]
        frame = task.frames.index(frame_name)
        for label, x1, y1, x2, y2 in boxes:
            task.shapes.append(
                {
                    "id": next(self._ids), "type": "rectangle", "frame": frame,
                    "label_id": self._label_id(task, label), "points": [x1, y1, x2, y2],
                    "occluded": False, "outside": False, "z_order": 0, "rotation": 0.0,
                    "attributes": [], "group": 0, "source": "manual",
                }
            )

    def tag(self, task_id: int, frame_name: str, label: str) -> None:
        """Put a frame tag (e.g. the project's exclusion tag) on a frame."""
        task = self.tasks[task_id]
        task.tags.append(
            {"id": next(self._ids), "frame": task.frames.index(frame_name), "label_id": self._label_id(task, label),
             "group": 0, "source": "manual", "attributes": []}
        )

    def complete_jobs(self, task_id: int, assignee: str = "annotator") -> None:
        for job_id in self.tasks[task_id].job_ids:
            job = self.jobs[job_id]
            job.state, job.stage, job.assignee = "completed", "acceptance", assignee

    def inject(
        self, kind: str, *, path_prefix: str = "/api/", method: str | None = None, times: int = 1, skip: int = 0
    ) -> None:
        """Answer ``times`` matching requests, after letting ``skip`` through, with fault ``kind`` (``FAULTS``)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
        self.faults.append(Fault(kind, method, path_prefix, times, skip))

    def inject_randomly(self, rate: float, *, kinds: tuple[str, ...] = TRANSPORT_FAULTS, seed: int = 0) -> None:
        """From now on, answer each request with probability ``rate`` with one of ``kinds`` (0 stops it)."""
        self._random_faults = (rate, kinds, random.Random(seed)) if rate > 0 else None

    def _label_id(self, task: Task, name: str) -> int:
        for label in self.labels.values():
            if label["name"] == name and label["project_id"] == task.project_id:
                return label["id"]
        raise KeyError(f"no label {name!r} in project {task.project_id}")

    # --- JSON bodies, shaped like CVAT 2.80 ----------------------------------------------

    def about_json(self) -> dict:
        return {"name": "Computer Vision Annotation Tool", "description": "stand-in for tests",
                "version": self.version, "logo_url": "", "subtitle": "stand-in"}

    def project_json(self, project: dict) -> dict:
        tasks = [t for t in self.tasks.values() if t.project_id == project["id"]]
        return {
            "id": project["id"], "name": project["name"], "url": f"{self.url}/api/projects/{project['id']}",
            "owner": {"id": 1, "username": "annotator", "url": f"{self.url}/api/users/1"}, "assignee": None,
            "tasks": {"count": len(tasks), "url": f"{self.url}/api/tasks?project_id={project['id']}"},
            "labels": {"url": f"{self.url}/api/labels?project_id={project['id']}"},
            "created_date": project["created"], "updated_date": project["created"], "status": "annotation",
            "dimension": "2d", "organization": None, "target_storage": None, "source_storage": None,
            "bug_tracker": "", "guide_id": None, "task_subsets": [], "assignee_updated_date": None,
        }

    def label_json(self, label: dict) -> dict:
        return {"id": label["id"], "name": label["name"], "color": "#ff0000", "attributes": [],
                "type": label["type"], "sublabels": [], "project_id": label["project_id"], "has_parent": False}

    def task_json(self, task: Task) -> dict:
        jobs = [self.jobs[j] for j in task.job_ids]
        return {
            "id": task.id, "name": task.name, "url": f"{self.url}/api/tasks/{task.id}", "project_id": task.project_id,
            "owner": {"id": 1, "username": "annotator", "url": f"{self.url}/api/users/1"}, "assignee": None,
            "jobs": {"count": len(jobs), "completed": sum(j.state == "completed" for j in jobs), "validation": 0,
                     "url": f"{self.url}/api/jobs?task_id={task.id}"},
            "labels": {"url": f"{self.url}/api/labels?task_id={task.id}"},
            "created_date": _now(), "updated_date": _now(), "segment_size": task.segment_size, "overlap": 0,
            "status": "annotation", "size": len(task.frames), "image_quality": 95, "data": task.id if task.frames else None,
            "dimension": "2d", "mode": "annotation", "subset": "", "organization": None, "target_storage": None,
            "source_storage": None, "bug_tracker": "", "data_chunk_size": 36, "guide_id": None,
            "assignee_updated_date": None, "validation_mode": None,
        }

    def job_json(self, job: Job) -> dict:
        task = self.tasks[job.task_id]
        return {
            "id": job.id, "task_id": job.task_id, "project_id": task.project_id, "url": f"{self.url}/api/jobs/{job.id}",
            "assignee": {"id": 2, "username": job.assignee, "url": f"{self.url}/api/users/2"} if job.assignee else None,
            "state": job.state, "stage": job.stage, "status": job.stage, "type": "annotation",
            "start_frame": job.start_frame, "stop_frame": job.stop_frame, "frame_count": job.stop_frame - job.start_frame + 1,
            "issues": {"count": 0, "url": f"{self.url}/api/issues?job_id={job.id}"},
            "labels": {"url": f"{self.url}/api/labels?job_id={job.id}"},
            "dimension": "2d", "mode": "annotation", "bug_tracker": None, "data_chunk_size": 36,
            "data_compressed_chunk_type": "imageset", "data_original_chunk_type": "imageset",
            "created_date": _now(), "updated_date": _now(), "organization": None, "target_storage": None,
            "source_storage": None, "guide_id": None, "consensus_replicas": 0, "parent_job_id": None,
            "assignee_updated_date": None,
        }

    def request_json(self, rq_id: str) -> dict:
        request = self.requests[rq_id]
        status = request["status"]
        return {
            "id": rq_id, "status": status, "message": request.get("message", ""),
            "progress": {"queued": 0.0, "started": 0.5}.get(status, 1.0) if status != "failed" else None,
            "operation": {"type": request["type"], "target": request["target"], "project_id": None,
                          "task_id": request.get("task_id"), "job_id": None, "format": request.get("format"),
                          "function_id": None},
            "created_date": request["created"], "started_date": request.get("started"),
            "finished_date": request.get("finished"),
            "expiry_date": None, "owner": {"id": 1, "username": "annotator"},
            "result_url": request.get("result_url"), "result_id": request.get("result_id"),
        }

    def meta_json(self, task: Task) -> dict:
        return {
            "chunks_updated_date": _now(), "image_quality": 95, "size": len(task.frames),
            "start_frame": 0, "stop_frame": max(len(task.frames) - 1, 0), "frame_filter": "",
            "frames": [{"name": name, "width": task.image_sizes.get(name, (0, 0))[0],
                        "height": task.image_sizes.get(name, (0, 0))[1], "related_files": 0, "has_related_context": False}
                       for name in task.frames],
            "deleted_frames": [], "included_frames": None, "chunk_size": 36, "storage_method": "cache",
            "storage": "local", "cloud_storage_id": None,
        }

    def annotations_json(self, task: Task) -> dict:
        return {"version": 1, "tags": task.tags, "shapes": task.shapes, "tracks": []}

    def coco_export(self, task: Task) -> bytes:
        """COCO 1.0 as CVAT writes it: 1-based ids, frame names, [x, y, w, h] from points."""
        categories = [label for label in self.labels.values()
                      if label["project_id"] == task.project_id and label["type"] != "tag"]
        category_ids = {label["id"]: i + 1 for i, label in enumerate(categories)}
        images, annotations = [], []
        for frame, name in enumerate(task.frames):
            width, height = task.image_sizes.get(name, (0, 0))
            images.append({"id": frame + 1, "width": width, "height": height, "file_name": name, "license": 0,
                           "flickr_url": "", "coco_url": "", "date_captured": 0})
        for shape in task.shapes:
            x1, y1, x2, y2 = shape["points"]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": shape["frame"] + 1, "category_id": category_ids[shape["label_id"]],
                 "segmentation": [], "area": (x2 - x1) * (y2 - y1), "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0,
                 "attributes": {"occluded": shape["occluded"], "rotation": shape["rotation"]}}
            )
        coco = {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {"contributor": "", "date_created": "",
                "description": "", "url": "", "version": "", "year": ""},
                "categories": [{"id": category_ids[c["id"]], "name": c["name"], "supercategory": ""} for c in categories],
                "images": images, "annotations": annotations}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("annotations/instances_default.json", json.dumps(coco))
        return buffer.getvalue()

    # --- request handling ---------------------------------------------------------------

    def new_request(self, kind: str, target: str, task_id: int, *, work: Callable[[dict], None] | None = None,
                    **extra) -> str:
        """A queued background request; ``work(request)`` runs when a poll finishes it (it may set
        ``status`` to ``failed`` and a ``message``, or ``started`` to keep it running)."""
        # Real request ids are base64 and may hold '/', '+', '='.
        rq_id = base64.b64encode(b"\xfb\xff\xbf" + f"{kind}:{task_id}:{secrets.token_hex(3)}".encode()).decode()
        self.requests[rq_id] = {"id": rq_id, "type": kind, "target": target, "task_id": task_id,
                                "status": "queued", "created": _now(), "polls": 0, "work": work, **extra}
        return rq_id

    def advance_request(self, rq_id: str) -> None:
        """One poll: queued, then started, and after ``request_polls`` polls the work runs and it finishes."""
        request = self.requests[rq_id]
        if request["status"] not in ("queued", "started"):
            return
        request["polls"] = request.get("polls", 0) + 1
        if request["polls"] <= self.request_polls or request.get("hang"):  # a hung worker: started for ever
            if request["polls"] > 1 or self.request_polls <= 1:
                request["status"], request["started"] = "started", request.get("started") or _now()
            return
        request["status"], request["started"] = "finished", request.get("started") or _now()
        work = request.get("work")
        if work is not None:
            work(request)
        if request["status"] in ("finished", "failed"):
            request["finished"] = _now()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and path.startswith(fault.path_prefix) and fault.method in (None, method):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    fault.times -= 1
                    self.injected.append((fault.kind, method, path))
                    return fault
            if self._random_faults is not None:
                rate, kinds, rng = self._random_faults
                if rng.random() < rate:
                    kind = rng.choice(kinds)
                    self.injected.append((kind, method, path))
                    return Fault(kind, None, "/", 1)
        return None


class _Handler(BaseHTTPRequestHandler):
    cvat: CvatStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    # dispatch -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.cvat.requests_log.append((method, path))
        self._answer_lost = False
        fault = self.cvat.take_fault(method, path)
        if fault is not None and fault.kind == "dropped":
            return self._drop()
        if fault is not None and fault.kind != "dropped_after":
            status = FAULT_STATUSES[fault.kind]
            headers = [("Retry-After", "0")] if status == 429 else []
            return self._send(status, {"detail": f"injected {fault.kind}"}, headers=headers)
        self._answer_lost = fault is not None  # handled, then the connection drops: the client never hears
        try:
            self._route(method, path, query, body)
        except HttpError as error:
            self._send(error.status, error.body)

    def _route(self, method: str, path: str, query: dict, body: bytes) -> None:
        if path == "/api/server/about" and method == "GET":
            return self._send(200, self.cvat.about_json())
        if path == "/api/auth/login" and method == "POST":
            return self._login(body)
        self._authenticate(method)
        for pattern, route_method, handler in _ROUTES:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                with self.cvat._lock:
                    return handler(self, query, body, *[unquote(g) for g in match.groups()])
        self._send(404, {"detail": f"no route {method} {path}"})

    def _authenticate(self, method: str) -> None:
        """A token, or a session cookie; a session writes only with its CSRF token in X-CSRFToken (Django's rule)."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in self.cvat.tokens:
            return
        cookies = SimpleCookie(self.headers.get("Cookie", ""))
        session = cookies.get("sessionid")
        if session is None or session.value not in self.cvat.sessions:
            raise HttpError(401, {"detail": "Authentication credentials were not provided."})
        if method in WRITE_METHODS:
            header = self.headers.get("X-CSRFToken")
            if not header:
                raise HttpError(403, {"detail": "CSRF Failed: CSRF token missing."})
            cookie = cookies.get("csrftoken")
            if cookie is None or header != cookie.value or header != self.cvat.sessions[session.value]:
                raise HttpError(403, {"detail": "CSRF Failed: CSRF token incorrect."})

    def _drop(self) -> None:
        """Close the connection without a word, as a proxy or a crashed worker does."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, payload=None, *, raw: bytes | None = None,
              headers: list[tuple[str, str]] | dict | None = None, content_type: str = "application/json") -> None:
        if self._answer_lost:
            return self._drop()
        data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items() if isinstance(headers, dict) else headers or []:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _paginated(self, items: list[dict], query: dict) -> None:
        try:
            page = int(query.get("page", 1))
            size = int(query.get("page_size", self.cvat.page_size)) or self.cvat.page_size
        except ValueError:
            raise HttpError(404, {"detail": "Invalid page."}) from None
        last = max(1, -(-len(items) // size))
        if not 1 <= page <= last:
            raise HttpError(404, {"detail": "Invalid page."})

        def link(number: int) -> str:
            return f"{self.cvat.url}{urlsplit(self.path).path}?{urlencode({**query, 'page': number})}"

        self._send(200, {"count": len(items), "next": link(page + 1) if page < last else None,
                         "previous": link(page - 1) if page > 1 else None,
                         "results": items[(page - 1) * size : page * size]})

    def _validated(self, body: bytes, model_name: str) -> dict:
        """The JSON body, checked against cvat-sdk's request model ``model_name`` as CVAT's serializer would."""
        from cvat_sdk.api_client import Configuration, model_utils, models
        from cvat_sdk.api_client.exceptions import OpenApiException

        try:
            data = json.loads(body or b"{}")
        except ValueError as error:
            raise HttpError(400, {"detail": f"JSON parse error - {error}"}) from None
        try:
            model_utils.validate_and_convert_types(
                data, (getattr(models, model_name),), ["body"], True, True, configuration=Configuration()
            )
        except (TypeError, OpenApiException) as error:
            raise HttpError(400, {"non_field_errors": [f"not a valid {model_name}: {error}"]}) from None
        return data

    # handlers -----------------------------------------------------------------------

    def _login(self, body: bytes) -> None:
        data = self._validated(body, "LoginSerializerExRequest")
        if self.cvat.users.get(data.get("username")) != data.get("password"):
            return self._send(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
        session, csrf = secrets.token_hex(8), secrets.token_hex(8)
        key = secrets.token_hex(8)
        self.cvat.sessions[session] = csrf
        self.cvat.issued_secrets |= {session, csrf, key}
        self._send(200, {"key": key}, headers=[("Set-Cookie", f"sessionid={session}; Path=/"),
                                                ("Set-Cookie", f"csrftoken={csrf}; Path=/")])

    def projects_list(self, query, body):
        items = [p for p in self.cvat.projects.values() if "name" not in query or p["name"] == query["name"]]
        self._paginated([self.cvat.project_json(p) for p in items], query)

    def projects_create(self, query, body):
        data = self._validated(body, "ProjectWriteRequest")
        project = {"id": next(self.cvat._ids), "name": data["name"], "created": _now()}
        self.cvat.projects[project["id"]] = project
        for label in data.get("labels", []):
            label_id = next(self.cvat._ids)
            self.cvat.labels[label_id] = {"id": label_id, "name": label["name"], "type": label.get("type") or "any",
                                          "project_id": project["id"]}
        self._send(201, self.cvat.project_json(project))

    def projects_get(self, query, body, project_id):
        project = self.cvat.projects.get(int(project_id))
        return self._send(200, self.cvat.project_json(project)) if project else self._send(404, {"detail": "Not found."})

    def labels_list(self, query, body):
        project_id = query.get("project_id")
        if "task_id" in query:
            project_id = self.cvat.tasks[int(query["task_id"])].project_id
        items = [self.cvat.label_json(label) for label in self.cvat.labels.values() if label["project_id"] == int(project_id)]
        self._paginated(items, query)

    def tasks_list(self, query, body):
        items = [
            t for t in self.cvat.tasks.values()
            if ("name" not in query or t.name == query["name"])
            and ("project_id" not in query or t.project_id == int(query["project_id"]))
        ]
        self._paginated([self.cvat.task_json(t) for t in items], query)

    def tasks_create(self, query, body):
        data = self._validated(body, "TaskWriteRequest")
        task = Task(id=next(self.cvat._ids), name=data["name"], project_id=data.get("project_id"),
                    segment_size=int(data.get("segment_size") or 0))
        self.cvat.tasks[task.id] = task
        self._send(201, self.cvat.task_json(task))

    def tasks_get(self, query, body, task_id):
        task = self.cvat.tasks.get(int(task_id))
        return self._send(200, self.cvat.task_json(task)) if task else self._send(404, {"detail": "Not found."})

    def tasks_delete(self, query, body, task_id):
        task = self.cvat.tasks.pop(int(task_id), None)
        if task:
            for job_id in task.job_ids:
                self.cvat.jobs.pop(job_id, None)
        self._send(204)

    def tasks_data(self, query, body, task_id):
        task = self.cvat.tasks[int(task_id)]
        if "Upload-Start" in self.headers:
            task.pending_files.clear()
            return self._send(202, raw=b"")
        if "Upload-Multiple" in self.headers:
            for filename, content in _multipart_files(self.headers["Content-Type"], body):
                task.pending_files[PurePosixPath(filename).name] = content
            return self._send(200, raw=b"")
        if "Upload-Finish" in self.headers:
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("application/json"):
                self._validated(body, "DataRequest")
            fields = _form_fields(content_type, body)
            order = fields.get("upload_file_order") or sorted(task.pending_files)
            names = order if isinstance(order, list) else [order]
            files = [(name, task.pending_files[name]) for name in names]
        else:  # files from the share, named relative to its root
            data = self._validated(body, "DataRequest")
            files = [(path, b"") for path in data.get("server_files", [])]

        def add_frames(request: dict) -> None:  # CVAT's worker, once the request is taken
            if task.id not in self.cvat.tasks:
                request.update(status="failed", message=f"Task {task.id} was deleted")
            else:
                self._add_frames(task, files)

        self._send(202, {"rq_id": self.cvat.new_request("create", "task", task.id, work=add_frames)})

    def _add_frames(self, task: Task, files: list[tuple[str, bytes]]) -> None:
        from PIL import Image

        for name, content in files:
            task.frames.append(name)
            if content:
                with Image.open(io.BytesIO(content)) as image:
                    task.image_sizes[name] = image.size
        size = task.segment_size or len(task.frames)
        for start in range(0, len(task.frames), size):
            job = Job(id=next(self.cvat._ids), task_id=task.id, start_frame=start,
                      stop_frame=min(start + size, len(task.frames)) - 1)
            self.cvat.jobs[job.id] = job
            task.job_ids.append(job.id)

    def jobs_list(self, query, body):
        items = [j for j in self.cvat.jobs.values() if "task_id" not in query or j.task_id == int(query["task_id"])]
        self._paginated([self.cvat.job_json(j) for j in items], query)

    def jobs_get(self, query, body, job_id):
        self._send(200, self.cvat.job_json(self.cvat.jobs[int(job_id)]))

    def jobs_patch(self, query, body, job_id):
        job = self.cvat.jobs[int(job_id)]
        data = self._validated(body, "PatchedJobWriteRequest")
        job.state = data.get("state", job.state)
        job.stage = data.get("stage", job.stage)
        self._send(200, self.cvat.job_json(job))

    def task_meta(self, query, body, task_id):
        self._send(200, self.cvat.meta_json(self.cvat.tasks[int(task_id)]))

    def task_annotations(self, query, body, task_id):
        self._send(200, self.cvat.annotations_json(self.cvat.tasks[int(task_id)]))

    def task_export(self, query, body, task_id):
        task = self.cvat.tasks[int(task_id)]
        if query.get("format") not in EXPORT_FORMATS:  # CVAT's serializer error, as DRF lists it
            raise HttpError(400, ["Unknown format specified for the request"])
        mode = self.cvat.export_mode

        def export(request: dict) -> None:  # CVAT's worker: the annotations as they are when it runs
            if mode == "fails":
                request.update(status="failed", message="Export failed: the worker was killed (out of memory)")
            else:
                self.cvat.exports[request["id"]] = self.cvat.coco_export(task)
                request.update(result_url=f"{self.cvat.url}/api/requests/{request['id']}/download",
                               result_id=task.id)

        rq_id = self.cvat.new_request("export", "task", task.id, work=export, format=query["format"],
                                      hang=mode == "never_finishes")
        self._send(202, {"rq_id": rq_id})

    def requests_get(self, query, body, rq_id):
        if rq_id not in self.cvat.requests:
            return self._send(404, {"detail": "Not found."})
        self.cvat.advance_request(rq_id)
        self._send(200, self.cvat.request_json(rq_id))

    def requests_download(self, query, body, rq_id):
        self._send(200, raw=self.cvat.exports[rq_id], content_type="application/zip",
                   headers={"Content-Disposition": 'attachment; filename="export.zip"'})


_ROUTES: list[tuple[str, str, Callable]] = [
    (r"/api/projects/?", "GET", _Handler.projects_list),
    (r"/api/projects/?", "POST", _Handler.projects_create),
    (r"/api/projects/(\d+)/?", "GET", _Handler.projects_get),
    (r"/api/labels/?", "GET", _Handler.labels_list),
    (r"/api/tasks/?", "GET", _Handler.tasks_list),
    (r"/api/tasks/?", "POST", _Handler.tasks_create),
    (r"/api/tasks/(\d+)/?", "GET", _Handler.tasks_get),
    (r"/api/tasks/(\d+)/?", "DELETE", _Handler.tasks_delete),
    (r"/api/tasks/(\d+)/data/?", "POST", _Handler.tasks_data),
    (r"/api/tasks/(\d+)/data/meta/?", "GET", _Handler.task_meta),
    (r"/api/tasks/(\d+)/annotations/?", "GET", _Handler.task_annotations),
    (r"/api/tasks/(\d+)/dataset/export/?", "POST", _Handler.task_export),
    (r"/api/jobs/?", "GET", _Handler.jobs_list),
    (r"/api/jobs/(\d+)/?", "GET", _Handler.jobs_get),
    (r"/api/jobs/(\d+)/?", "PATCH", _Handler.jobs_patch),
    # Request ids hold '/', so they are matched greedily (the SDK percent-encodes them).
    (r"/api/requests/(.+)/download", "GET", _Handler.requests_download),
    (r"/api/requests/(.+)", "GET", _Handler.requests_get),
]


def _multipart_files(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    return [
        (part.get_filename(), part.get_payload(decode=True))
        for part in message.iter_parts()
        if part.get_filename()
    ]


def _form_fields(content_type: str, body: bytes) -> dict:
    if content_type.startswith("application/json"):
        return json.loads(body or b"{}")
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, list[str]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields.setdefault(name.removesuffix("[]"), []).append(part.get_payload(decode=True).decode())
        return {k: v if len(v) > 1 or k == "upload_file_order" else v[0] for k, v in fields.items()}
    parsed = parse_qs(body.decode())
    return {k.removesuffix("[]"): v if len(v) > 1 or k.startswith("upload_file_order") else v[0] for k, v in parsed.items()}
