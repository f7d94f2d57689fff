"""Compute providers: where a rendered training Job runs, behind one interface.

The interface: validate, submit, status, cancel, and queued (the jobs waiting or running).

- ``local``: the Job's container command as a subprocess of this machine, in a workspace
  under ``data/jobs/<job>/`` (the Secret's variables come from this process's environment);
- ``dask``: the same command as a task on a ``distributed`` cluster (``compute.dask.address``,
  or a ``LocalCluster``);
- ``kubernetes``: the Job itself, created, read and deleted through the official client.

``submit_with_strategy`` picks one: ``preferred`` tries the providers in order, validating
each just before submitting to it; ``first_available`` validates them all first, then
submits to the first that passed; ``queue`` validates them all, then tries them by the
jobs waiting or running on each (``queued``), fewest first; ``fastest`` and ``cheapest``
validate them all, then try them by how long this training took on each before (from
the MLflow runs the providers tagged), times ``compute.price_per_hour`` for the
cheapest. A provider that fails its validation or its submission hands over to the next
with one log sentence; when none can, one sentence gives each reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, get_args

from cv_pipelines.engines.compute_settings import ComputeSettings, Strategy
from cv_pipelines.engines.kubernetes_job import container_process, with_provider
from cv_pipelines.errors import ConfigurationError, ExternalServiceError

logger = logging.getLogger(__name__)

#: What ``status`` answers: the job waits, runs, ended well or badly, or is not known.
JOB_STATES = ("pending", "running", "succeeded", "failed", "unknown")
#: How ``submit_with_strategy`` orders the providers (README: "Kubernetes Jobs and compute providers").
STRATEGIES: tuple[str, ...] = get_args(Strategy)
#: The labels every rendered training Job carries (``kubernetes_job.render_job``).
TRAINING_JOBS_SELECTOR = "app.kubernetes.io/name=cv-pipelines,app.kubernetes.io/component=training"


class ProviderUnavailable(Exception):
    """A provider cannot take the job; the message is the reason, as one clause."""


class AlreadySubmitted(Exception):
    """The provider already has a job of this name: the same request at the same commit was submitted before.

    Not a reason to fall back: the next provider would run the same training a second time.
    """


class Submission(NamedTuple):
    """Where a job went: the provider's name and the job's id there."""

    provider: str
    job_id: str


class ComputeProvider(ABC):
    """One place a training Job can run."""

    name: str

    @abstractmethod
    def validate(self) -> None:
        """Check the provider can take a job now (configuration, credentials); raises ``ProviderUnavailable``."""

    @abstractmethod
    def submit(self, manifest: Mapping[str, Any]) -> str:
        """Start the Job ``manifest``; returns its id.

        Raises:
            ProviderUnavailable: it was not started here (another provider may take it).
            AlreadySubmitted: a job of its name was started here before.
        """

    @abstractmethod
    def status(self, job_id: str) -> str:
        """One of ``JOB_STATES``."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop the job (a finished one stays as it is)."""

    @abstractmethod
    def queued(self) -> int:
        """How many jobs wait or run here now (the ``queue`` strategy's measure); raises ``ProviderUnavailable``."""


def _secret_values(settings: ComputeSettings) -> dict[str, str]:
    """The Secret's variables as this process's environment has them (the local stand-in for the Secret)."""
    return {name: os.environ[name] for name in settings.kubernetes.secret_keys if name in os.environ}


def _process_env(env: Mapping[str, str]) -> dict[str, str]:
    # This Python environment's tools (kedro, dvc) first, as the image's would be.
    base = {k: v for k, v in os.environ.items() if k != "CV_PIPELINES_PROJECT_ROOT"}
    base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    return {**base, **env}


def run_container_command(argv: Sequence[str], env: Mapping[str, str], folder: str) -> int:
    """Run the Job's command in ``folder`` (its workspace), output to ``folder/job.log``; its exit status.

    A plain function, so that a Dask worker can run it too.
    """
    workspace = Path(folder) / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / "job.log", "ab") as log:
        done = subprocess.run(
            list(argv),
            env=_process_env({**env, "CV_WORKSPACE": str(workspace)}),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    return done.returncode


class LocalProvider(ComputeProvider):
    """The container command as a subprocess, in ``jobs_dir/<job>/`` (its pid, log and exit status there)."""

    name = "local"

    def __init__(self, settings: ComputeSettings, jobs_dir: Path) -> None:
        self.settings = settings
        self.jobs_dir = jobs_dir

    def validate(self) -> None:
        """The workspace folder can be made and git is installed."""
        import shutil

        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProviderUnavailable(f"its jobs folder {self.jobs_dir} cannot be made ({exc.strerror})") from None
        if shutil.which("git") is None:
            raise ProviderUnavailable("git is not installed on this machine")

    def submit(self, manifest: Mapping[str, Any]) -> str:
        """Start the command in its own session; returns the Job's name."""
        name = manifest["metadata"]["name"]
        folder = self.jobs_dir / name
        if folder.exists():
            raise AlreadySubmitted(f"its folder {folder} exists")
        folder.mkdir(parents=True)
        argv, env = container_process(with_provider(manifest, self.name), _secret_values(self.settings), folder)
        # The exit status is written by a shell around the command, so `status` reads it in any later process.
        wrapped = ["sh", "-c", '"$@"; echo $? > "$CV_JOB_FOLDER/exit_status"', "job", *argv]
        workspace = folder / "workspace"
        workspace.mkdir()
        with open(folder / "job.log", "ab") as log:
            process = subprocess.Popen(
                wrapped,
                env=_process_env({**env, "CV_WORKSPACE": str(workspace), "CV_JOB_FOLDER": str(folder)}),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (folder / "pid").write_text(f"{process.pid}\n")
        return name

    def status(self, job_id: str) -> str:
        """From the exit status the job left, else whether its process still runs."""
        folder = self.jobs_dir / job_id
        with contextlib.suppress(FileNotFoundError, ValueError):
            return "succeeded" if int((folder / "exit_status").read_text()) == 0 else "failed"
        try:
            os.killpg(int((folder / "pid").read_text()), 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return "unknown"
        return "running"

    def queued(self) -> int:
        """The jobs of ``jobs_dir`` whose process still runs."""
        if not self.jobs_dir.is_dir():
            return 0
        return sum(1 for folder in self.jobs_dir.iterdir() if self.status(folder.name) == "running")

    def cancel(self, job_id: str) -> None:
        """SIGTERM the job's process group; its exit status is then 143 (the shell that writes it is stopped too)."""
        folder = self.jobs_dir / job_id
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.killpg(int((folder / "pid").read_text()), signal.SIGTERM)
            if not (folder / "exit_status").exists():
                (folder / "exit_status").write_text("143\n")


class DaskProvider(ComputeProvider):
    """The container command as a task on a ``distributed`` cluster; the job id is the task's key.

    With a ``LocalCluster`` (no ``compute.dask.address``) the cluster lives as long as this
    provider: the command that submits must wait for the job (``wait``).
    """

    name = "dask"

    def __init__(self, settings: ComputeSettings, jobs_dir: Path) -> None:
        self.settings = settings
        self.jobs_dir = jobs_dir
        self._client: Any = None
        self._futures: dict[str, Any] = {}

    def _connect(self):
        if self._client is None:
            from distributed import Client, LocalCluster

            dask = self.settings.dask
            if dask.address:
                self._client = Client(dask.address, timeout=dask.connect_timeout_s)
            else:
                cluster = LocalCluster(
                    n_workers=dask.n_workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
                self._client = Client(cluster)
        return self._client

    def validate(self) -> None:
        """The scheduler answers and has a worker."""
        try:
            client = self._connect()
            workers = client.scheduler_info().get("workers", {})
        except (OSError, TimeoutError) as exc:
            where = self.settings.dask.address or "a LocalCluster"
            raise ProviderUnavailable(f"the Dask scheduler at {where} does not answer ({exc})") from None
        if not workers:
            raise ProviderUnavailable("the Dask scheduler has no worker")

    def submit(self, manifest: Mapping[str, Any]) -> str:
        """Submit ``run_container_command`` under the Job's name."""
        name = manifest["metadata"]["name"]
        folder = self.jobs_dir / name
        if folder.exists():  # a second run would clone into the first one's workspace and fail
            raise AlreadySubmitted(f"its folder {folder} exists")
        argv, env = container_process(with_provider(manifest, self.name), _secret_values(self.settings), folder)
        future = self._connect().submit(run_container_command, argv, env, str(folder), key=name, pure=False)
        self._futures[name] = future
        return name

    def status(self, job_id: str) -> str:
        """The task's state on the scheduler: a non-zero exit status is a failure."""
        from distributed import Future

        future = self._futures.get(job_id) or Future(job_id, client=self._connect())
        state = future.status
        if state == "finished":
            return "succeeded" if future.result() == 0 else "failed"
        return {"pending": "running", "error": "failed", "cancelled": "failed"}.get(str(state), "unknown")

    def wait(self, job_id: str) -> str:
        """Block until the job ended; its final state."""
        from distributed import Future, wait

        wait([self._futures.get(job_id) or Future(job_id, client=self._connect())])
        return self.status(job_id)

    def queued(self) -> int:
        """The scheduler's tasks not yet done (every client's: the workers are shared)."""
        try:
            return int(self._connect().run_on_scheduler(_unfinished_tasks))
        except (OSError, TimeoutError) as exc:
            raise ProviderUnavailable(f"the Dask scheduler does not answer ({exc})") from None

    def cancel(self, job_id: str) -> None:
        """Cancel the task (a command already running on a worker runs on)."""
        from distributed import Future

        (self._futures.get(job_id) or Future(job_id, client=self._connect())).cancel()

    def close(self) -> None:
        """Close the client (and a LocalCluster of this provider's)."""
        if self._client is not None:
            cluster = self._client.cluster
            self._client.close()
            if cluster is not None:
                cluster.close()
            self._client = None


_TIMEOUT = (3, 15)  # connect, read: an API server that does not answer is a reason to fall back


class KubernetesProvider(ComputeProvider):
    """The Job on a cluster through the official client (``BatchV1Api``); the job id is the Job's name."""

    name = "kubernetes"

    def __init__(self, settings: ComputeSettings) -> None:
        self.settings = settings
        self._batch: Any = None

    def _api(self):
        if self._batch is None:
            from kubernetes import client, config
            from kubernetes.config.config_exception import ConfigException

            k8s = self.settings.kubernetes
            configuration = client.Configuration()
            try:
                path = k8s.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
                if k8s.kubeconfig or Path(path).exists():
                    config.load_kube_config(config_file=path, context=k8s.context, client_configuration=configuration)
                else:
                    config.load_incluster_config(client_configuration=configuration)
            except (ConfigException, OSError) as exc:
                raise ProviderUnavailable(f"its configuration does not load ({exc})") from None
            # Set before the client makes its connection pool: urllib3's retries would hide an absent server.
            configuration.retries = 0
            api_client = client.ApiClient(configuration)
            self._batch = client.BatchV1Api(api_client)
        return self._batch

    def _reason(self, exc: Exception) -> str:
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException):
            if exc.status == 401:
                return f"the API server refused the credentials (HTTP {exc.status} {exc.reason})"
            # 403 is RBAC or a full ResourceQuota: the Status's message says which.
            return f"the API server answered HTTP {exc.status} {exc.reason}: {_status_message(exc)}"
        host = self._api().api_client.configuration.host
        return f"the API server {host} cannot be reached ({type(exc).__name__})"

    def validate(self) -> None:
        """The configuration loads and the API server lists batch/v1 with these credentials."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._api().get_api_resources(_request_timeout=_TIMEOUT)
        except (ApiException, HTTPError, OSError) as exc:
            raise ProviderUnavailable(self._reason(exc)) from None

    def submit(self, manifest: Mapping[str, Any]) -> str:
        """Create the Job in its namespace; a Job of that name already there is a refusal."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        body = with_provider(manifest, self.name)
        namespace = body["metadata"].get("namespace") or self.settings.kubernetes.namespace
        try:
            created = self._api().create_namespaced_job(namespace, body, _request_timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:
                raise AlreadySubmitted(f"a Job of that name exists in namespace {namespace}") from None
            raise ProviderUnavailable(self._reason(exc)) from None
        except (HTTPError, OSError) as exc:
            raise ProviderUnavailable(self._reason(exc)) from None
        return str(created.metadata.name)

    def status(self, job_id: str) -> str:
        """From the Job's status: its Complete/Failed condition, else active pods."""
        from kubernetes.client.exceptions import ApiException

        try:
            job = self._api().read_namespaced_job_status(
                job_id, self.settings.kubernetes.namespace, _request_timeout=_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return "unknown"
            raise ExternalServiceError(f"Kubernetes could not report on Job {job_id}: {self._reason(exc)}.") from None
        return _job_state(job)

    def queued(self) -> int:
        """The project's training Jobs in the namespace that have not ended (no Complete or Failed condition)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            jobs = self._api().list_namespaced_job(
                self.settings.kubernetes.namespace, label_selector=TRAINING_JOBS_SELECTOR, _request_timeout=_TIMEOUT
            )
        except (ApiException, HTTPError, OSError) as exc:
            raise ProviderUnavailable(self._reason(exc)) from None
        return sum(1 for job in jobs.items if _job_state(job) in ("pending", "running"))

    def cancel(self, job_id: str) -> None:
        """Delete the Job and its pods (a Job already gone is not an error)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._api().delete_namespaced_job(
                job_id,
                self.settings.kubernetes.namespace,
                propagation_policy="Background",
                _request_timeout=_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise ExternalServiceError(f"Kubernetes could not delete Job {job_id}: {self._reason(exc)}.") from None


def _job_state(job) -> str:
    """A ``V1Job``'s state: its Complete/Failed condition, else whether a pod is active."""
    status = job.status
    for condition in (status.conditions if status else None) or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed"):
            return "succeeded" if condition.type == "Complete" else "failed"
    return "running" if status and status.active else "pending"


def _status_message(exc: Exception) -> str:
    """The ``message`` of the Kubernetes ``Status`` an ``ApiException`` carries, else its body."""
    import json

    body = getattr(exc, "body", None) or ""
    try:
        return str(json.loads(body).get("message") or body)
    except (ValueError, AttributeError):
        return str(body)[:200]


def _unfinished_tasks(dask_scheduler) -> int:
    """Run on the scheduler: its tasks waiting for inputs, for a worker, or running."""
    return sum(
        1 for task in dask_scheduler.tasks.values() if task.state in ("waiting", "queued", "no-worker", "processing")
    )


def make_provider(name: str, settings: ComputeSettings, jobs_dir: Path) -> ComputeProvider:
    """The provider called ``name``."""
    if name == "local":
        return LocalProvider(settings, jobs_dir)
    if name == "dask":
        return DaskProvider(settings, jobs_dir)
    if name == "kubernetes":
        return KubernetesProvider(settings)
    raise ConfigurationError(f"compute provider {name!r} is not one of local, dask, kubernetes; pick one of those.")


def provider_order(preferred: str | None, configured: Sequence[str]) -> list[str]:
    """``preferred`` first, then the configured providers in their order, each once."""
    return list(dict.fromkeys([*([preferred] if preferred else []), *configured]))


def submit_with_strategy(
    manifest: Mapping[str, Any],
    providers: Sequence[ComputeProvider],
    strategy: str,
    job_hours: Mapping[str, Sequence[float]] | None = None,
    price_per_hour: Mapping[str, float] | None = None,
) -> tuple[Submission, ComputeProvider]:
    """Submit ``manifest`` to the first of ``providers`` that takes it, by ``strategy``.

    ``fastest`` and ``cheapest`` order the providers by ``job_hours`` (how long this
    training took on each before, ``models.runs.job_hours_by_provider``), times
    ``price_per_hour`` for ``cheapest``.

    Raises:
        ExternalServiceError: no provider took it; the sentence gives each one's reason.
    """
    if strategy not in STRATEGIES:
        raise ConfigurationError(
            f"compute strategy {strategy!r} is not one of {', '.join(STRATEGIES)}; pick one of those."
        )
    reasons: dict[str, str] = {}
    candidates = list(providers)
    if strategy != "preferred":
        candidates = [p for p in providers if _validated(p, reasons)]
    if strategy == "queue":
        candidates = _by_queue(candidates, reasons)
    elif strategy in ("fastest", "cheapest"):
        candidates = _by_history(candidates, strategy, job_hours or {}, price_per_hour or {})
    for name, reason in reasons.items():
        logger.warning("The %s provider is not available (%s); skipping it.", name, reason)
    for index, provider in enumerate(candidates):
        try:
            if strategy == "preferred" and not _validated(provider, reasons):
                raise ProviderUnavailable(reasons[provider.name])
            job_id = provider.submit(manifest)
        except AlreadySubmitted as exc:
            name = manifest["metadata"]["name"]
            raise ConfigurationError(
                f"Job {name} was already submitted to the {provider.name} provider ({exc}), so it was not "
                f"submitted again anywhere; follow it with `jobs status {provider.name} {name}`, or pass --name "
                "to run the same request as a new job."
            ) from None
        except ProviderUnavailable as exc:
            reasons[provider.name] = str(exc)
            following = candidates[index + 1 :]
            if following:
                logger.warning(
                    "The %s provider cannot run the job (%s); falling back to %s.",
                    provider.name,
                    exc,
                    following[0].name,
                )
            continue
        logger.debug("Job %s submitted to the %s provider.", job_id, provider.name)  # the caller says so
        return Submission(provider.name, job_id), provider
    listed = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
    raise ExternalServiceError(
        f"No compute provider could run job {manifest['metadata']['name']} ({listed}); fix one of them "
        "or name another with --provider."
    )


def _by_queue(providers: Sequence[ComputeProvider], reasons: dict[str, str]) -> list[ComputeProvider]:
    """``providers`` by the jobs waiting or running on each, fewest first; the configured order breaks ties."""
    counts: dict[str, int] = {}
    for provider in providers:
        try:
            counts[provider.name] = provider.queued()
        except ProviderUnavailable as exc:
            reasons[provider.name] = str(exc)
    ordered = sorted((p for p in providers if p.name in counts), key=lambda p: counts[p.name])  # stable
    if ordered:
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        logger.info("Jobs waiting or running: %s; trying %s first.", listed, ordered[0].name)
    return ordered


def _by_history(
    providers: Sequence[ComputeProvider],
    strategy: str,
    job_hours: Mapping[str, Sequence[float]],
    price_per_hour: Mapping[str, float],
) -> list[ComputeProvider]:
    """``providers`` by the median hours this training took on each (``fastest``), or those times the price.

    A provider with no finished training yet (or, for ``cheapest``, no price) comes after
    those with a figure, in the configured order; one priced 0 is free however long it takes.
    """
    import statistics

    figures: dict[str, float] = {}
    for provider in providers:
        median = statistics.median(job_hours[provider.name]) if job_hours.get(provider.name) else None
        price = price_per_hour.get(provider.name)
        if strategy == "fastest" and median is not None:
            figures[provider.name] = median
        elif strategy == "cheapest" and price is not None and (price == 0 or median is not None):
            figures[provider.name] = price * (median or 0.0)
    ordered = sorted(providers, key=lambda p: (p.name not in figures, figures.get(p.name, 0.0)))  # stable
    if ordered:
        unit = "h" if strategy == "fastest" else " per job"
        described = ", ".join(
            f"{p.name} {figures[p.name]:.2f}{unit}" if p.name in figures else f"{p.name} unknown" for p in ordered
        )
        measure = "median training time" if strategy == "fastest" else "cost (price x median training time)"
        logger.info("By %s: %s; trying %s first.", measure, described, ordered[0].name)
    return ordered


def _validated(provider: ComputeProvider, reasons: dict[str, str]) -> bool:
    try:
        provider.validate()
    except ProviderUnavailable as exc:
        reasons[provider.name] = str(exc)
        return False
    return True
