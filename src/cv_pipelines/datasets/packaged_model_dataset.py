"""``PackagedModelDataset``: the packaged detector, logged into the deployment's MLflow run on save."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kedro.io import AbstractDataset

from cv_pipelines.models.packaging import PackagedModel


class PackagedModelDataset(AbstractDataset[PackagedModel, PackagedModel]):
    """Save: log the packaged model (``mlflow.pyfunc``, as code) into the active run. Load: it, with its ``model_uri``.

    Why the project's own dataset and not kedro-mlflow's ``MlflowModelTrackingDataset``:
    that one logs with the ``save_args`` written in the catalog, while this model's
    artifacts (its ``best.pt`` and ``best.onnx``), its config (classes, image size,
    thresholds) and its input example are known only once the deployment has built them.
    Registration and aliases stay with the quality gate (``cv_pipelines.models.registry``).
    An empty ``PackagedModel`` (a rollback, a model already registered) logs nothing.

    Args:
        name: the model's artifact path in the run.
        metadata: kedro-viz and other plugins' metadata.
    """

    def __init__(self, *, name: str = "model", metadata: dict[str, Any] | None = None) -> None:
        self._name = name
        self._saved: PackagedModel | None = None
        self.metadata = metadata

    def save(self, data: PackagedModel) -> None:
        """Log ``data`` into the active MLflow run (nothing for an empty one) and keep it for ``load``."""
        from cv_pipelines.models.packaging import log_packaged_model

        if data.is_empty or data.weights is None or data.onnx is None:
            self._saved = data
            return
        info = log_packaged_model(
            weights=data.weights, onnx=data.onnx, config=data.config, example=data.example, name=self._name
        )
        self._saved = replace(data, model_uri=info.model_uri)

    def load(self) -> PackagedModel:
        """The model this dataset logged in this run, with its ``model_uri``."""
        if self._saved is None:
            raise NotImplementedError("the packaged model is logged by the deployment's package_model in the same run")
        return self._saved

    def _exists(self) -> bool:
        return self._saved is not None

    def _describe(self) -> dict[str, Any]:
        return {"name": self._name}
