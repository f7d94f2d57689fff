"""``TrainedModelDataset``: a trained model as the catalog hands it from training to evaluation and deployment.

Why the project's own dataset and not kedro-mlflow's ``MlflowArtifactDataset``: that one
loads an artifact of a run id fixed in the catalog, while the model a pipeline needs is
chosen at run time: the one trained earlier in the same ``kedro run``, a run pinned
with ``--params``, or the project's latest (the run its record file names). The
weights are downloaded with ``mlflow.artifacts`` as kedro-mlflow does, once per run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro_datasets._typing import JSONPreview

from cv_pipelines.errors import ConfigurationError
from cv_pipelines.models.runs import TrackedModel


class TrainedModelDataset(AbstractDataset[TrackedModel, TrackedModel]):
    """Save: record a trained model (a YAML record, and its files in the active MLflow run). Load: a ``TrackedModel``.

    Load gives, in this order: the run ``run_id`` pins; the model saved through this
    dataset earlier in the same process (so ``kedro run --pipelines
    training,evaluation`` evaluates what it just trained); the run the ``record`` file
    names. Weights are the local file when the record's run folder still holds it,
    else a cached download from MLflow.

    Args:
        record: YAML file (any fsspec path) that records the latest saved model.
        cache_dir: local folder for downloaded weights, one sub-folder per run.
        run_id: an MLflow training run to load instead (``--params`` of the pipeline).
        run_id_key: the record's key holding the run id.
        weights_key: the record's key holding the project-relative local weights.
        log_run_folder: on save, also log the weights' run folder (the training's files) into the run.
        missing: the sentence that says what to run when there is no record yet.
        pinned_by: the parameter key that sets ``run_id``, for error messages.
        metadata: kedro-viz and other plugins' metadata.
    """

    def __init__(
        self,
        *,
        record: str,
        cache_dir: str,
        run_id: str | None = None,
        run_id_key: str = "mlflow_run_id",
        weights_key: str = "best_weights",
        log_run_folder: bool = False,
        missing: str = (
            "no training has run in this project yet; run `kedro run --pipelines training` first, or set "
            "evaluation.run_id to a training run of the MLflow store"
        ),
        pinned_by: str = "evaluation.run_id",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        from kedro_datasets.yaml import YAMLDataset

        self._record = YAMLDataset(filepath=record)
        self._record_path = record
        self._cache_dir = Path(cache_dir)
        self._run_id = run_id or None
        self._run_id_key = run_id_key
        self._weights_key = weights_key
        self._log_run_folder = log_run_folder
        self._missing = missing
        self._pinned_by = pinned_by
        self._saved: TrackedModel | None = None
        # The run _run resolved (and the record naming it): check_loadable, called by the
        # hooks before the pipeline, and load then ask MLflow once between them.
        self._resolved: tuple[Any, dict[str, Any]] | None = None
        self.metadata = metadata

    def load(self) -> TrackedModel:
        """The pinned, just saved or recorded trained model; a one-sentence error when there is none."""
        if self._run_id is None and self._saved is not None:
            return self._saved
        run, record = self._run()
        return self._model_of_run(run, record)

    def check_loadable(self) -> None:
        """Raise the one-sentence ``ConfigurationError`` that ``load`` would, without downloading anything.

        The project's hooks call it for the inputs a pipeline reads from earlier runs,
        before any node runs (Kedro reports a failed load with a traceback).
        """
        if self._run_id is not None or self._saved is None:
            self._run()

    def _run(self):
        """The training run to load, and the record when it names that run; looked up once, again after a save."""
        if self._resolved is None:
            self._resolved = self._resolve_run()
        return self._resolved

    def _resolve_run(self):
        from cv_pipelines.models.runs import RunLookupError, active_run, mlflow_client, training_run

        record = self._record.load() if self._record.exists() else {}
        run_id = self._run_id or record.get(self._run_id_key)
        if not run_id:
            if not record:
                raise ConfigurationError(self._missing)
            raise ConfigurationError(
                f"the latest model ({self._record_path}) has no MLflow run id, it ran with tracking off; set "
                f"{self._pinned_by} to a training run"
            )
        active = active_run()
        try:
            run = training_run(mlflow_client(), run_id, allow_unfinished=active.info.run_id if active else None)
        except RunLookupError as exc:
            raise ConfigurationError(
                f"{exc}; see `mlflow ui` for the run ids and set {self._pinned_by}, or run "
                "`kedro run --pipelines training` (a run that did not finish resumes with "
                "`--params training.resume=true`)"
            ) from None
        return run, (record if record.get(self._run_id_key) == run_id else {})

    def _model_of_run(self, run, record: dict[str, Any]) -> TrackedModel:
        from cv_pipelines.config.resolvers import in_project, project_root
        from cv_pipelines.models.runs import RunLookupError, trained_model_of

        local = in_project(project_root(), record[self._weights_key]) if record.get(self._weights_key) else None
        try:
            model = trained_model_of(run, self._cache_dir, local if local is not None and local.is_file() else None)
        except RunLookupError as exc:
            raise ConfigurationError(str(exc)) from None
        return replace(model, summary=record)

    def save(self, data: TrackedModel) -> None:
        """Write the record (``data.summary``) and log it (and the run folder) into the active MLflow run."""
        from cv_pipelines.models import lineage

        record = Path(self._record_path)
        before = record.read_bytes() if record.exists() else None
        self._record.save(data.summary)
        try:
            lineage.log_files(self._record_path, data.weights.parent.parent if self._log_run_folder else None)
        except BaseException:
            # A record naming a run whose artifacts never arrived (the tracking server or its
            # object store down) would make the next run take that failed run for the latest
            # model: the record goes back to what it was.
            if before is None:
                record.unlink(missing_ok=True)
            else:
                record.write_bytes(before)
            raise
        self._saved = data
        self._resolved = None  # the record names another run now

    def _exists(self) -> bool:
        return self._saved is not None or self._record.exists()

    def _describe(self) -> dict[str, Any]:
        return {"record": self._record_path, "cache_dir": str(self._cache_dir), "run_id": self._run_id}

    def preview(self) -> JSONPreview:
        """The record of the latest model, for kedro-viz's JSON preview."""
        import json

        return JSONPreview(json.dumps(self._record.load() if self._record.exists() else {}, default=str))
