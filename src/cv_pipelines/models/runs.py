"""Training runs in MLflow as the pipelines read them back: which run, its weights, its lineage.

The one module that looks runs up in an MLflow store (embedded SQLite or a tracking
server alike): the training run a pipeline was asked for, the champion of the model
registry, and a run's ``weights/best.pt``, downloaded once per run into a cache
folder (a run's artifacts never change, so the cache is keyed by run id). A training
also logs its epochs through it as they end (``log_epoch_metrics``), and a resumed
one copies the epochs of the run it resumes (``copy_epoch_history``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cv_pipelines.models.lineage import FAMILY_TAG, TRAINING_TAG, WEIGHTS_ARTIFACT


class RunLookupError(LookupError):
    """The run asked for is not usable: unknown, not a training, unfinished or without weights."""


@dataclass(frozen=True)
class TrackedModel:
    """A trained model as later steps use it: its run, its weights on disk and where its data came from.

    ``lineage`` holds the export and dataset version the run trained on (the run's
    ``data.*`` tags without the prefix); ``version`` is the registry version when the
    model was loaded by a registry alias.
    """

    run_id: str
    weights: Path
    family: str = "yolo"
    lineage: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def with_version(self, version: str) -> TrackedModel:
        """The same model, as registry version ``version``."""
        return replace(self, version=str(version))


def mlflow_client():
    """An ``MlflowClient`` for the tracking URI kedro-mlflow (or the caller) configured."""
    from mlflow import MlflowClient  # heavy import kept local

    return MlflowClient()


def active_run():
    """The MLflow run kedro-mlflow opened for this ``kedro run``, or None when tracking is off."""
    import mlflow  # heavy import kept local

    return mlflow.active_run()


def log_epoch_metrics(client, run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
    """Log one epoch's ``metrics`` into run ``run_id`` now, with the epoch as their step."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, float(value), now, epoch) for name, value in metrics.items()])


def copy_epoch_history(client, source_run_id: str, target_run_id: str, before_epoch: int) -> set[int]:
    """Copy run ``source_run_id``'s metric values of the epochs (steps) below ``before_epoch`` into ``target_run_id``.

    Timestamps are kept. Returns the epochs copied; ``RunLookupError`` when
    ``source_run_id`` is not in this store.
    """
    from mlflow.exceptions import MlflowException

    try:
        names = list(client.get_run(source_run_id).data.metrics)
    except MlflowException:
        raise RunLookupError(f"run {source_run_id!r} is not in this MLflow store") from None
    points = [
        point for name in names for point in client.get_metric_history(source_run_id, name) if point.step < before_epoch
    ]
    for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(target_run_id, metrics=points[start : start + 1000])
    return {point.step for point in points}


def training_run(client, run_id: str, *, allow_unfinished: str | None = None):
    """The training run ``run_id``; ``RunLookupError`` saying why it cannot be used.

    ``allow_unfinished`` is a run id that may still be running (the active run of a
    ``kedro run --pipelines training,evaluation``).
    """
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise RunLookupError(f"training run {run_id!r} is not in this MLflow store") from None
    if run.data.tags.get(TRAINING_TAG) != "true":
        raise RunLookupError(f"run {run_id!r} is not a training run (it has no {TRAINING_TAG} tag)")
    if run.info.status != "FINISHED" and run_id != allow_unfinished:
        raise RunLookupError(f"training run {run_id!r} is {run.info.status}, not finished")
    return run


def fetch_weights(run_id: str, cache_dir: Path) -> Path:
    """The run's ``weights/best.pt``, from the cache or downloaded into it once."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    target = Path(cache_dir) / run_id
    cached = target / WEIGHTS_ARTIFACT
    if cached.is_file():
        return cached
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(download_artifacts(run_id=run_id, artifact_path=WEIGHTS_ARTIFACT, dst_path=str(target)))
    except (MlflowException, OSError) as exc:
        raise RunLookupError(
            f"run {run_id} has no {WEIGHTS_ARTIFACT} artifact ({exc.__class__.__name__}); it did not finish training "
            "or its artifacts were deleted"
        ) from None


def trained_model_of(run, cache_dir: Path, weights: Path | None = None) -> TrackedModel:
    """The ``TrackedModel`` of an MLflow training run; ``weights`` when already on disk."""
    tags = run.data.tags
    return TrackedModel(
        run_id=run.info.run_id,
        weights=weights if weights is not None else fetch_weights(run.info.run_id, cache_dir),
        family=tags.get(FAMILY_TAG, "yolo"),
        lineage={key.removeprefix("data."): value for key, value in tags.items() if key.startswith("data.")},
    )


def registered_model(client, name: str, alias: str, cache_dir: Path) -> TrackedModel | None:
    """The model version ``alias`` of registered model ``name`` points at, or None while there is none."""
    from cv_pipelines.models.registry import TRAINING_RUN_TAG, alias_version

    version = alias_version(client, name, alias)
    if version is None:
        return None
    run_id = version.tags.get(TRAINING_RUN_TAG) or version.run_id
    run = client.get_run(run_id)
    return trained_model_of(run, cache_dir).with_version(str(version.version))


def job_hours_by_provider(client, candidate: str, last: int = 20) -> dict[str, list[float]]:
    """How long the finished trainings of ``candidate`` took on each compute provider, in hours, newest first.

    Only runs a provider started count (they carry its ``cv_pipelines.compute.*`` tags);
    at most ``last`` per provider.
    """
    from cv_pipelines.models.lineage import COMPUTE_TAGS

    provider_tag, candidate_tag = COMPUTE_TAGS["CV_COMPUTE_PROVIDER"], COMPUTE_TAGS["CV_TRAINING_CANDIDATE"]
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    if not experiments:
        return {}
    runs = client.search_runs(
        experiments,
        f"tags.`{TRAINING_TAG}` = 'true' and tags.`{candidate_tag}` = '{candidate}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    hours: dict[str, list[float]] = {}
    for run in runs:
        provider = run.data.tags.get(provider_tag)
        if provider and run.info.end_time and len(hours.setdefault(provider, [])) < last:
            hours[provider].append((run.info.end_time - run.info.start_time) / 3_600_000)
    return {provider: durations for provider, durations in hours.items() if durations}
