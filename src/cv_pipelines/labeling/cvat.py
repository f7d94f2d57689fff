"""The one module that talks to CVAT, through the real cvat-sdk.

What it adds to the SDK: one clear sentence for each way CVAT fails (unreachable,
401, 429, 5xx, an unsupported server version, a failed or never-ending background
request), bounded retries with exponential back-off where a retry can help, and a
deadline on background requests, which the SDK polls forever.
"""

from __future__ import annotations

import logging
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cv_pipelines.config.parameters import CvatParams
from cv_pipelines.labeling.cvat_connection import CvatConnection

if TYPE_CHECKING:  # the SDK is imported only when CVAT is actually used
    from cvat_sdk.core.client import Client

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth retrying: throttling and server-side trouble.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class CvatError(RuntimeError):
    """CVAT could not do what was asked; the message says what and what to do."""


class CvatUnavailableError(CvatError):
    """CVAT did not answer, or kept answering 429/5xx after the retries."""


class CvatAuthError(CvatError):
    """CVAT refused the credentials."""


class CvatRequestTimeout(CvatError):
    """A background request (task data, export) did not finish before the deadline."""


#: The longest back-off between two retries, however many came before.
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class JobProgress:
    """How many of a task's jobs are completed, of how many."""

    completed: int
    total: int

    @property
    def done(self) -> bool:
        """Every job of the task is completed (and it has some)."""
        return self.total > 0 and self.completed == self.total


def _deadline_client_class():
    from cvat_sdk.core.client import Client
    from cvat_sdk.core.exceptions import BackgroundRequestException

    class DeadlineClient(Client):
        """The SDK client with a deadline on background requests."""

        request_timeout_s: float = 600.0

        def wait_for_completion(self, rq_id: str, *, status_check_period=None, log_prefix=None):
            if status_check_period is None:
                status_check_period = self.config.status_check_period
            deadline = time.monotonic() + self.request_timeout_s
            while True:
                request, response = self.api_client.requests_api.retrieve(rq_id)
                status = request.status.value
                if status == "finished":
                    return request, response
                if status == "failed":
                    raise BackgroundRequestException(request.message)
                if time.monotonic() + status_check_period > deadline:
                    raise CvatRequestTimeout(
                        f"CVAT background request {rq_id} ({log_prefix or request.operation.type}) is still "
                        f"'{status}' after {self.request_timeout_s:.0f} s; CVAT's workers may be stuck or "
                        "overloaded. Nothing was changed here; run again later or raise "
                        "labeling.cvat.request_timeout_s."
                    )
                time.sleep(status_check_period)

    return DeadlineClient


class CvatAdapter:
    """A connected, authenticated CVAT client with the project's error handling."""

    def __init__(self, connection: CvatConnection, params: CvatParams, *, cache_dir: Path | None = None) -> None:
        """Connect and log in to ``connection``'s server, with ``labeling.cvat``'s timeouts and retries.

        ``cache_dir``: where the SDK keeps its cache (None: the SDK's default).
        """
        self.connection = connection
        self.params = params
        self.cache_dir = cache_dir
        self.client: Client = self._retrying(self._connect, "connect")

    # --- connection -------------------------------------------------------------

    def _connect(self) -> Client:
        from cvat_sdk.core.client import AccessTokenCredentials, Config
        from cvat_sdk.core.exceptions import IncompatibleVersionException

        config_kwargs: dict[str, Any] = {
            "status_check_period": self.params.status_check_period_s,
            "allow_unsupported_server": False,
        }
        if self.cache_dir is not None:
            config_kwargs["cache_dir"] = self.cache_dir
        client_class = _deadline_client_class()
        host = self.connection.host
        try:
            client = client_class(host, config=Config(**config_kwargs), check_server_version=True)
        except IncompatibleVersionException as exc:
            raise CvatError(
                f"CVAT at {host} is not usable with cvat-sdk {_sdk_version()}: {exc} Use a CVAT server of the "
                "same minor version (or the next), or install the matching cvat-sdk."
            ) from None
        except ValueError as exc:  # a version string that is not PEP 440 crashes the SDK
            raise CvatError(f"CVAT at {host} reported a server version the SDK cannot read ({exc}).") from None
        client.request_timeout_s = self.params.request_timeout_s
        client.logger.setLevel(logging.WARNING)
        if self.connection.access_token is not None:
            client.login(AccessTokenCredentials(self.connection.access_token.get_secret_value()))
        elif self.connection.username and self.connection.password is not None:
            client.login((self.connection.username, self.connection.password.get_secret_value()))
        else:  # resolve_cvat_connection never builds one without a secret
            raise CvatError(f"no CVAT secret is configured for {host}")
        return client

    def _retrying(self, action: Callable[[], T], what: str) -> T:
        """Run ``action``; retry transient failures with exponential back-off, then explain."""
        from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.params.max_retries + 1),
            wait=wait_exponential(multiplier=self.params.retry_backoff_s, max=BACKOFF_MAX_S),
            before_sleep=lambda state: logger.warning(
                "CVAT %s failed (%s); retry %d of %d",
                what,
                _describe(state.outcome.exception()) if state.outcome is not None else "no outcome",
                state.attempt_number,
                self.params.max_retries,
            ),
            reraise=False,
        )
        try:
            return retrying(action)
        except RetryError as exc:
            raise self._explain(exc.last_attempt.exception(), what, retried=True) from None
        except CvatError:
            raise
        except Exception as exc:
            raise self._explain(exc, what, retried=False) from None

    def _explain(self, exc: BaseException | None, what: str, *, retried: bool) -> CvatError:
        host = self.connection.host
        status = _status_of(exc)
        after = f" after {self.params.max_retries} retries" if retried else ""
        if status == 401 or (status == 400 and what == "connect"):
            return CvatAuthError(
                f"CVAT at {host} refused the credentials ({status}) during {what}; check 'cvat' in "
                "conf/local/credentials.yml or CVAT_ACCESS_TOKEN (a token must be a personal access token)."
            )
        if status == 429:
            return CvatUnavailableError(
                f"CVAT at {host} kept throttling requests (429) during {what}{after}; nothing was changed, run "
                "again later or raise labeling.cvat.max_retries."
            )
        if status is not None and status >= 500:
            return CvatUnavailableError(
                f"CVAT at {host} failed with HTTP {status} during {what}{after}; nothing was changed, check the "
                "CVAT server's logs and run again."
            )
        if status is None and _is_connection_error(exc):
            return CvatUnavailableError(
                f"CVAT at {host} cannot be reached during {what}{after} ({_describe(exc)}); check that it is "
                "running and that 'cvat.host' / CVAT_HOST is right."
            )
        if _is_background_failure(exc):
            return CvatError(f"CVAT could not finish {what}: {exc}. Nothing was changed here.")
        return CvatError(f"CVAT at {host} failed during {what}: {_describe(exc)}")

    # --- operations -------------------------------------------------------------

    def ensure_project(self, name: str, labels: Sequence[str], tag_names: Sequence[str]) -> int:
        """The id of the project ``name``, created with the labels if it does not exist yet."""

        def find_or_create() -> int:
            for project in self.client.projects.list(name=name):
                if project.name == name:
                    return int(project.id)
            from cvat_sdk.api_client import models

            spec = models.ProjectWriteRequest(
                name=name,
                labels=[models.PatchedLabelRequest(name=label, type="rectangle") for label in labels]
                + [models.PatchedLabelRequest(name=tag, type="tag") for tag in tag_names],
            )
            return int(self.client.projects.create(spec).id)

        return self._retrying(find_or_create, f"finding or creating project {name!r}")

    def find_task(self, name: str, project_id: int) -> int | None:
        """The id of the task named ``name`` in the project, or None."""

        def find() -> int | None:
            for task in self.client.tasks.list(name=name, project_id=project_id):
                if task.name == name and int(task.project_id or 0) == project_id:
                    return int(task.id)
            return None

        return self._retrying(find, f"looking up task {name!r}")

    def create_task(
        self,
        *,
        name: str,
        project_id: int,
        files: Sequence[Path],
        share_paths: Sequence[str] | None,
        segment_size: int,
        image_quality: int,
    ) -> int:
        """Create the task ``name`` with the batch's images; adopt it if a crash left it behind."""
        from cvat_sdk.api_client import models
        from cvat_sdk.core.proxies.tasks import ResourceType

        def create() -> int:
            existing = self.find_task(name, project_id)
            if existing is not None:
                task = self.client.tasks.retrieve(existing)
                if int(task.size or 0) > 0:
                    return existing  # a previous run created it fully, then stopped
                task.remove()
            spec = models.TaskWriteRequest(name=name, project_id=project_id, segment_size=segment_size)
            resources = list(share_paths) if share_paths is not None else [str(p) for p in files]
            task = self.client.tasks.create_from_data(
                spec=spec,
                resources=resources,
                resource_type=ResourceType.SHARE if share_paths is not None else ResourceType.LOCAL,
                data_params={"image_quality": image_quality, "sorting_method": "predefined"},
            )
            return int(task.id)

        return self._retrying(create, f"creating task {name!r}")

    def delete_task(self, task_id: int) -> None:
        """Delete the task ``task_id``."""
        self._retrying(lambda: self.client.tasks.retrieve(task_id).remove(), f"deleting task {task_id}")

    def job_progress(self, task_id: int) -> JobProgress:
        """How far the annotators are with the task's jobs."""

        def progress() -> JobProgress:
            jobs = self.client.tasks.retrieve(task_id).get_jobs()
            completed = sum(1 for job in jobs if str(job.state) == "completed")
            return JobProgress(completed=completed, total=len(jobs))

        return self._retrying(progress, f"reading the jobs of task {task_id}")

    def annotators(self, task_id: int) -> str:
        """Who worked on the task's jobs (assignees), for the labels registry."""

        def names() -> str:
            jobs = self.client.tasks.retrieve(task_id).get_jobs()
            found = sorted({job.assignee.username for job in jobs if getattr(job, "assignee", None)})
            return ",".join(found) or "unassigned"

        return self._retrying(names, f"reading the assignees of task {task_id}")

    def export_coco(self, task_id: int, target_dir: Path) -> Path:
        """Export the task as COCO 1.0 (no images) and return the instances JSON."""
        archive = target_dir / f"task_{task_id}_coco.zip"

        def export() -> Path:
            self.client.tasks.retrieve(task_id).export_dataset("COCO 1.0", archive, include_images=False)
            return archive

        self._retrying(export, f"exporting task {task_id} as COCO 1.0")
        with zipfile.ZipFile(archive) as zipped:
            # instances_default.json, or instances_<subset>.json for a task with a subset.
            members = sorted(n for n in zipped.namelist() if re.fullmatch(r"annotations/instances_[^/]+\.json", n))
            if len(members) != 1:
                raise CvatError(
                    f"CVAT's COCO export of task {task_id} holds {len(members)} annotations/instances_*.json files; "
                    "expected one"
                )
            member = members[0]
            target = target_dir / f"task_{task_id}_instances_default.json"
            target.write_bytes(zipped.read(member))
        return target

    def frame_tags(self, task_id: int) -> list[tuple[str, str]]:
        """(frame name, tag label) of every frame tag in the task."""

        def tags() -> list[tuple[str, str]]:
            task = self.client.tasks.retrieve(task_id)
            annotations = task.get_annotations()
            if not annotations.tags:
                return []
            names = {int(label.id): label.name for label in task.get_labels()}
            frames = [frame.name for frame in task.get_frames_info()]
            return [
                (frames[int(tag.frame)], names.get(int(tag.label_id), str(tag.label_id)))
                for tag in annotations.tags
                if 0 <= int(tag.frame) < len(frames)
            ]

        return self._retrying(tags, f"reading the frame tags of task {task_id}")


def _sdk_version() -> str:
    from cvat_sdk.version import VERSION

    return VERSION


def _status_of(exc: BaseException | None) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, int) else None


def _is_connection_error(exc: BaseException | None) -> bool:
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, OSError))


def _is_background_failure(exc: BaseException | None) -> bool:
    from cvat_sdk.core.exceptions import BackgroundRequestException

    return isinstance(exc, BackgroundRequestException)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, CvatError):
        return False
    status = _status_of(exc)
    if status is not None:
        return status in TRANSIENT_STATUSES
    return _is_connection_error(exc)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    status = _status_of(exc)
    if status is not None:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
