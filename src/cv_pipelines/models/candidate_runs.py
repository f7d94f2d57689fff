"""The training matrix's MLflow runs: one nested run per candidate, under the run kedro-mlflow opened.

The one module the ``matrix`` pipeline's nodes reach MLflow through (kedro-mlflow's
catalog datasets log into the single run of a ``kedro run``; a candidate's own run has no
catalog form).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cv_pipelines.models.lineage import EVALUATION_TAG, FAMILY_TAG, TRAINING_TAG
from cv_pipelines.models.matrix import namespace_of
from cv_pipelines.models.trainers import TrainedModel

MATRIX_TAG = "cv_pipelines.matrix_id"
CANDIDATE_TAG = "cv_pipelines.candidate"


def parent_run_id() -> str | None:
    """The matrix's MLflow run: the active run, or kedro-mlflow's run from a worker thread."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return active.info.run_id
    from cv_pipelines.hooks import project_mlflow_hook  # the run kedro-mlflow opened

    return project_mlflow_hook.run_id


@contextmanager
def candidate_run(name: str, parent_id: str) -> Iterator[str]:
    """A new MLflow run for candidate ``name``, nested under the matrix's run ``parent_id``; yields its id."""
    import mlflow

    # Nested under the matrix's run: through the active run in the runner's own thread,
    # through the explicit parent tag in a ThreadRunner worker (no active run there).
    with mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None, tags=_tags(name, parent_id)) as run:
        yield run.info.run_id


@contextmanager
def reopened_run(run_id: str) -> Iterator[None]:
    """Candidate run ``run_id`` active again (to log its evaluation)."""
    import mlflow

    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        yield


def log_candidate_params(params: Mapping[str, Any]) -> None:
    """The candidate's training parameters, flattened as kedro-mlflow flattens a run's (``a.b``)."""
    import mlflow
    from kedro_mlflow.framework.hooks.utils import _flatten_dict

    logged = {"training": {k: v for k, v in params.items() if k != "extra_args"}, "extra_args": params["extra_args"]}
    mlflow.log_params(_flatten_dict(logged, recursive=True, sep="."))


def tag_failure(error: str) -> None:
    """Record why the active candidate run failed (MLflow tags hold 5000 characters)."""
    import mlflow

    mlflow.set_tag("cv_pipelines.error", error[:5000])


def mark_failed(run_id: str) -> None:
    """End candidate run ``run_id`` as FAILED."""
    import mlflow

    mlflow.MlflowClient().set_terminated(run_id, status="FAILED")


def log_candidate_metrics(metrics: Mapping[str, float], split: str, evaluated_run_id: str) -> None:
    """The candidate's test metrics (``<split>/<name>``) on the active run, tagged as its evaluation."""
    import mlflow

    mlflow.log_metrics({f"{split}/{key}": float(value) for key, value in metrics.items()})
    mlflow.set_tags({EVALUATION_TAG: "true", "evaluated_run_id": evaluated_run_id})


def _tags(name: str, parent_run_id: str) -> dict[str, str]:
    """A candidate run's tags: a training run of this matrix, nested under it."""
    return {
        TRAINING_TAG: "true",
        MATRIX_TAG: parent_run_id,
        "mlflow.parentRunId": parent_run_id,
        CANDIDATE_TAG: name,
        "cv_pipelines.namespace": namespace_of(name),
    }


def log_candidate_training(trained: TrainedModel, run_dir: Path) -> None:
    """The candidate's per-epoch history, family and run folder, on the active run."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(point["value"]), now, int(point["step"]))
        for key, points in trained.history.items()
        for point in points
    ]
    client = mlflow.MlflowClient()
    active = mlflow.active_run()
    if active is None:  # called inside the candidate's `with mlflow.start_run()`
        raise RuntimeError("no active MLflow run to log the candidate's training into")
    run_id = active.info.run_id
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    mlflow.set_tag(FAMILY_TAG, trained.family)
    mlflow.log_artifacts(str(run_dir))
