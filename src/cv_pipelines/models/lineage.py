"""The lineage of a training or evaluation run, on the MLflow run kedro-mlflow opened.

kedro-mlflow logs parameters and catalog datasets; an MLflow *dataset input* (what
the run consumed, with its digest) and searchable tags have no catalog form, so they
are set here, on the active run.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cv_pipelines.exports.versions import ExportRef

#: Tag keys marking a run that trained (``cv_pipelines.training``) or evaluated
#: (``cv_pipelines.evaluation``) a model, value "true". Two keys, not one: ``kedro run
#: --pipelines training,evaluation`` does both in the same run.
TRAINING_TAG = "cv_pipelines.training"
EVALUATION_TAG = "cv_pipelines.evaluation"
#: ``yolo`` or ``rtdetr``: which Ultralytics model class loads the run's weights.
FAMILY_TAG = "cv_pipelines.model_family"
#: A training run's model, as an MLflow artifact path.
WEIGHTS_ARTIFACT = "weights/best.pt"

#: Where a training ran when a compute provider started it (``engines.providers``): the
#: variables the provider sets in the job's environment, and the run's tags for them.
COMPUTE_TAGS = {
    "CV_COMPUTE_PROVIDER": "cv_pipelines.compute.provider",
    "CV_COMPUTE_JOB_ID": "cv_pipelines.compute.job_id",
    "CV_TRAINING_CANDIDATE": "cv_pipelines.compute.candidate",
}


def compute_tags() -> dict[str, str]:
    """The tags saying which provider and job ran this process (none when no provider started it)."""
    import os

    return {tag: os.environ[variable] for variable, tag in COMPUTE_TAGS.items() if os.environ.get(variable)}


# MLflow's SQL store finds or inserts the dataset row (one per experiment, name and digest)
# in a read-then-insert transaction: two ThreadRunner candidates logging the same export at
# once both insert it, and one fails on the unique key. One at a time, the second finds the
# first's row and only links it to its own run. Candidates in other processes (Dask
# workers) share no lock: the one that loses the race tries again, and then finds the row.
_input_lock = threading.Lock()


def log_export_input(export_ref: ExportRef, context: str, tags: dict[str, str]) -> None:
    """Tag the active run (``tags`` plus ``data.<lineage key>``) and log the export as its input."""
    import mlflow  # heavy import kept local
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from cv_pipelines.config.resolvers import project_relative, project_root

    lineage = {**export_ref.lineage(), "export_path": project_relative(export_ref.path, project_root())}
    mlflow.set_tags({**tags, **{f"data.{key}": value for key, value in lineage.items()}})
    with warnings.catch_warnings():
        # A local path matches two equivalent local source types; MLflow warns and picks one.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(export_ref.path.resolve().as_uri())
    # MetaDataset leaves `profile` abstract in its type hints only; MLflow itself builds it this way.
    dataset = MetaDataset(  # type: ignore[abstract]
        source=source,
        name=export_ref.name,
        # MLflow's dataset digest column holds 36 characters; the full hash is a tag.
        digest=lineage["export_content_hash"][:32],
    )
    with _input_lock:
        try:
            mlflow.log_input(dataset, context=context, tags=lineage)
        except mlflow.MlflowException as exc:
            if "unique constraint" not in str(exc).lower():  # SQLite's and PostgreSQL's words
                raise
            mlflow.log_input(dataset, context=context, tags=lineage)


def log_files(*paths: str | Path | None) -> None:
    """Log files and folders (their whole content) into the active MLflow run; nothing when tracking is off."""
    import mlflow  # heavy import kept local

    if mlflow.active_run() is None:
        return
    for path in paths:
        if path is None:
            continue
        local = Path(path)
        if local.is_dir():
            mlflow.log_artifacts(str(local))
        elif local.is_file():
            mlflow.log_artifact(str(local))
