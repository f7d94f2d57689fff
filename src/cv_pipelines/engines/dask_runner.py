"""Kedro's nodes on a Dask cluster: ``kedro run --runner cv_pipelines.engines.dask_runner.DaskRunner``.

Kedro's documented ``DaskRunner`` ("Distribution with Dask"), adapted to this project's
catalog and hooks. Each node is submitted to a ``distributed.Client`` as soon as the nodes
it depends on are done, so independent nodes (the training matrix's candidates) run at
once on different workers.

What runs where:

- **The driver** (the ``kedro run`` process) keeps the catalog and every hook. It loads a
  node's inputs, calls ``before_node_run`` (kedro-mlflow logs the node's parameters into
  the session's run, which it opened here), and once the node is done calls
  ``after_node_run`` and saves its outputs, in the order ``SequentialRunner`` would. The
  catalog never travels. It cannot: Kedro refuses ``ParallelRunner`` because every
  kedro-mlflow ``MlflowArtifactDataset`` of the catalog (``matrix_leaderboard``, the
  evaluation's plots...) fails to pickle (kedro-mlflow makes its class inside
  ``__new__``: "Can't pickle <class '...CSVDataset.MlflowCSVDataset'>"), and Kedro checks
  every dataset of the catalog, used or not. A ``ParallelRunner`` would also swap the
  project's ``ProjectDataCatalog`` (its one-sentence errors) for a
  ``SharedMemoryDataCatalog`` and run no node or dataset hook in its processes
  (kedro-mlflow's parameter logging, the progress display). Here an in-memory result
  (``matrix.<name>.trained``) stays a ``MemoryDataset`` of the driver and reaches the
  next node as an argument of its task; only node inputs and outputs are pickled.
- **A worker** runs the node's function only, on the values the driver loaded. Before its
  first node it bootstraps the Kedro project (settings, offline defaults); before each
  node it is handed what the driver knows and a process cannot find out by itself:
  the project root, and the session's MLflow run (tracking URI, experiment, run id),
  made active in the worker's thread for the node as kedro-mlflow makes it active in a
  ThreadRunner thread: MLflow's active run is per process and thread, so a matrix
  candidate nests its run under it (``models/candidate_runs.py``) and a training node
  tags it, in a worker as in the driver.

A node that itself has parallel work (ingestion's hashing and checks) gives it to the
same cluster (``distributed.worker_client``). The cluster is a ``LocalCluster`` on
127.0.0.1 for the length of the run, or the scheduler named by ``dask_client.address``
(``conf/base/dask.yml``).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro.framework.hooks import hook_impl
from kedro.runner import AbstractRunner
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cv_pipelines.errors import ConfigurationError, ExternalServiceError

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Pipeline
    from kedro.pipeline.node import Node
    from pluggy import PluginManager

#: Overrides ``dask_client.address`` (a scheduler to use instead of a LocalCluster).
ADDRESS_ENV = "CV_PIPELINES_DASK_ADDRESS"
DASK_CONFIG_FILE = "conf/base/dask.yml"
_PROJECT_ROOT_ENV = "CV_PIPELINES_PROJECT_ROOT"


#: The configuration environment of the ``kedro run`` in progress in this process (its
#: ``--env``): Kedro hands it to hooks (``run_params``), not to runners, so the project's
#: ``RunEnvironmentHook`` records it here before the runner starts.
_session_env: str | None = None


class RunEnvironmentHook:
    """Records the session's ``--env`` for the DaskRunner, which then reads ``conf/<env>/dask.yml``."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Record the run's ``--env`` (None: the project's default environment)."""
        global _session_env
        _session_env = run_params.get("env")

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Forget it, so a runner used outside a session reads KEDRO_ENV, not a stale ``--env``."""
        global _session_env
        _session_env = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Forget it after a failed run too."""
        self.after_pipeline_run(run_params, pipeline, catalog)


class DaskClientSettings(BaseModel):
    """``dask_client`` of ``conf/*/dask.yml``: where the nodes run (the defaults live in the yml only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None
    n_workers: int = Field(ge=1, le=256)
    threads_per_worker: int = Field(ge=1, le=64)
    connect_timeout_s: float = Field(gt=0)


def dask_client_settings(env: str | None = None, root: Path | None = None, **overrides: Any) -> DaskClientSettings:
    """``dask_client`` as ``conf/base`` and ``conf/<env>`` set it, then ``CV_PIPELINES_DASK_ADDRESS``, then ``overrides``.

    Raises ``ConfigurationError`` naming the key and the file when a value is refused.
    """
    from kedro.config import MissingConfigException

    from cv_pipelines.config.loader import project_config

    try:
        # conf/<env>/dask.yml overrides single keys of conf/base's (the loader's soft merge).
        values = dict(project_config("dask", env, root).get("dask_client") or {})
    except MissingConfigException:
        values = {}
    if os.environ.get(ADDRESS_ENV):
        values["address"] = os.environ[ADDRESS_ENV]
    values |= {key: value for key, value in overrides.items() if value is not None}
    try:
        return DaskClientSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in ("dask_client", *error["loc"]))
        wrong = "is missing" if error["type"] == "missing" else f"is invalid ({error['msg']})"
        raise ConfigurationError(
            f"The Dask setting '{key}' {wrong}; set it in {DASK_CONFIG_FILE} "
            "(or conf/<env>/dask.yml, --runner-params), then run again."
        ) from None


@dataclass(frozen=True)
class WorkerRun:
    """What a worker is handed with each node: the project it runs in and the session's MLflow run."""

    project_path: str
    package_name: str
    mlflow_tracking_uri: str | None = None
    mlflow_experiment_id: str | None = None
    mlflow_run_id: str | None = None


class DaskRunner(AbstractRunner):
    """Runs each node on a Dask worker as soon as its inputs are ready; the catalog and hooks stay in the driver."""

    def __init__(
        self,
        is_async: bool = False,
        address: str | None = None,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
    ) -> None:
        """Keep the overrides of ``dask_client`` (``--runner-params``); the configuration is read when the run starts.

        Args:
            is_async: accepted as every Kedro runner does; inputs load in the driver either way.
            address: a scheduler (``tcp://host:8786``) instead of a LocalCluster.
            n_workers: the LocalCluster's worker processes.
            threads_per_worker: the LocalCluster's threads per worker.
        """
        super().__init__(is_async=is_async)
        self._overrides: dict[str, Any] = {
            "address": address,
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
        }

    def _get_executor(self, max_workers: int) -> None:
        return None  # Dask schedules; AbstractRunner's executor loop is not used

    def _validate_nodes(self, nodes) -> None:
        """A generator node's outputs stream chunk by chunk into the catalog: they cannot come back from a worker."""
        import inspect

        streaming = sorted(node.name for node in nodes if inspect.isgeneratorfunction(node.func))
        if streaming:
            raise ConfigurationError(
                f"The node(s) {', '.join(streaming)} yield their outputs in chunks, which the DaskRunner cannot "
                "bring back from a worker; run them with --runner SequentialRunner."
            )

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        """Submit each node once its dependencies are done; save its outputs as it completes."""
        from distributed import as_completed

        nodes = pipeline.nodes
        self._validate_nodes(nodes)
        load_counts = Counter(chain.from_iterable(n.inputs for n in nodes))
        dependencies = pipeline.node_dependencies
        todo: list[Node] = list(nodes)  # in topological order: ready nodes are submitted in Kedro's order
        done: set[Node] = set()
        worker_run = _worker_run()
        env = _session_env or os.environ.get("KEDRO_ENV")
        with _client(dask_client_settings(env, **self._overrides)) as client:
            running: dict[Any, tuple[Node, dict[str, Any]]] = {}
            completed = as_completed()
            while todo or running:
                for node in [n for n in todo if dependencies[n] <= done]:
                    todo.remove(node)
                    inputs = _load_inputs(node, catalog, hook_manager, run_id)
                    key = f"{node.name}-{uuid.uuid4().hex[:8]}"
                    future = client.submit(_run_node_on_worker, worker_run, node, inputs, key=key, pure=False)
                    running[future] = (node, inputs)
                    completed.add(future)
                if not running:
                    self._raise_runtime_error(set(todo), done, set(), None)
                future = next(completed)
                node, inputs = running.pop(future)
                try:
                    _save_outputs(node, catalog, hook_manager, inputs, future, run_id)
                except Exception:
                    self._suggest_resume_scenario(pipeline, done, catalog)
                    raise
                done.add(node)
                self._logger.info("Completed node: %s", node.name)
                self._logger.info("Completed %d out of %d tasks", len(done), len(nodes))
                self._release_datasets(node, catalog, load_counts, pipeline)


def _load_inputs(node: Node, catalog, hook_manager, run_id: str | None) -> dict[str, Any]:
    """The node's inputs loaded in the driver, with Kedro's dataset and ``before_node_run`` hooks."""
    from kedro.runner.task import Task

    # Kedro's own steps (its Task's), so hooks see exactly what SequentialRunner shows them.
    inputs = {name: Task._synchronous_dataset_load(name, node, catalog, hook_manager) for name in node.inputs}
    inputs.update(Task._collect_inputs_from_hook(node, catalog, inputs, False, hook_manager, run_id=run_id))
    return inputs


def _save_outputs(node: Node, catalog, hook_manager, inputs: dict[str, Any], future, run_id: str | None) -> None:
    """The node's outputs from its worker saved in the driver, with Kedro's node and dataset hooks."""
    try:
        outputs = future.result()
    except Exception as exc:
        hook_manager.hook.on_node_error(
            error=exc, node=node, catalog=catalog, inputs=inputs, is_async=False, run_id=run_id
        )
        raise
    hook_manager.hook.after_node_run(
        node=node, catalog=catalog, inputs=inputs, outputs=outputs, is_async=False, run_id=run_id
    )
    for name, data in outputs.items():
        hook_manager.hook.before_dataset_saved(dataset_name=name, data=data, node=node)
        catalog.save(name, data)
        hook_manager.hook.after_dataset_saved(dataset_name=name, data=data, node=node)
    for name in node.confirms:
        catalog.confirm(name)


def _worker_run() -> WorkerRun:
    """The project and the session's MLflow run, as the driver knows them (kedro-mlflow opened the run here)."""
    from kedro.framework.project import PACKAGE_NAME

    from cv_pipelines.config.resolvers import project_root
    from cv_pipelines.hooks import project_mlflow_hook

    run = WorkerRun(project_path=str(project_root()), package_name=PACKAGE_NAME or "cv_pipelines")
    run_id = project_mlflow_hook.run_id
    if run_id is None:  # an untracked pipeline: its nodes log nothing
        return run
    import mlflow

    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return WorkerRun(run.project_path, run.package_name, mlflow.get_tracking_uri(), experiment_id, run_id)


@contextmanager
def _client(settings: DaskClientSettings) -> Iterator[Any]:
    """A client of the scheduler at ``settings.address``, else of a LocalCluster made for this run."""
    import dask
    from distributed import Client, LocalCluster

    if settings.address:
        try:
            client = Client(settings.address, timeout=f"{settings.connect_timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ExternalServiceError(
                f"The Dask scheduler at dask_client.address {settings.address} does not answer ({exc}), so no "
                f"node ran; start it, or set dask_client.address in {DASK_CONFIG_FILE} (or {ADDRESS_ENV}) to one "
                "that runs, or to null for a local cluster."
            ) from None
        with client:  # closes this connection only: the cluster is not ours
            yield client
        return
    # Not daemonic: training's data loaders start worker processes of their own.
    with (
        dask.config.set({"distributed.worker.daemon": False}),
        LocalCluster(
            n_workers=settings.n_workers,
            threads_per_worker=settings.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _run_node_on_worker(worker_run: WorkerRun, node: Node, inputs: dict[str, Any]) -> dict[str, Any]:
    """On a worker: the node's function on the driver's inputs, in the driver's project and MLflow run."""
    _bootstrap_worker(worker_run.project_path)
    os.environ[_PROJECT_ROOT_ENV] = worker_run.project_path
    with _session_run_known(worker_run):
        return node.run(inputs)


_bootstrapped: set[str] = set()


def _bootstrap_worker(project_path: str) -> None:
    """Kedro's project settings in this worker process (once per project), as ``kedro run`` has them."""
    if project_path in _bootstrapped:
        return
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(Path(project_path))
    _bootstrapped.add(project_path)


@contextmanager
def _session_run_known(worker_run: WorkerRun) -> Iterator[None]:
    """The driver's MLflow run active in this worker's thread while a node runs, as in a ThreadRunner thread.

    kedro-mlflow re-opens the session's run in each ThreadRunner thread before a node;
    a worker gets the same: nodes tag and log into the active run (training's lineage,
    deployment's parity metrics), and a matrix candidate nests its own run under it.
    """
    if worker_run.mlflow_run_id is None or worker_run.mlflow_tracking_uri is None:
        yield
        return
    import mlflow

    mlflow.set_tracking_uri(worker_run.mlflow_tracking_uri)
    mlflow.set_experiment(experiment_id=worker_run.mlflow_experiment_id)
    mlflow.start_run(run_id=worker_run.mlflow_run_id)
    try:
        yield
    finally:
        _leave_open(worker_run.mlflow_run_id)


def _leave_open(run_id: str) -> None:
    """Run ``run_id`` no longer active in this thread, and not ended: the driver's kedro-mlflow ends it.

    ``mlflow.end_run`` would mark the session's run FINISHED while other nodes still run,
    and a worker outlives the run: its next node must not log into this one. MLflow has
    no public call for leaving a run, so it comes off the thread's stack of active runs.
    """
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    stack[:] = [run for run in stack if run.info.run_id != run_id]
