"""``RegisteredModelDataset``: the model version a registry alias (``champion``, ``challenger``) points at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset
from kedro_datasets._typing import JSONPreview

from cv_pipelines.models.runs import TrackedModel


class RegisteredModelDataset(AbstractDataset[None, TrackedModel | None]):
    """Load-only: the ``TrackedModel`` behind ``models:/<model_name>@<alias>``, or None while the alias is unset.

    The weights are those of the version's training run, downloaded once per run into
    ``cache_dir``. Load-only because aliases move through the deployment's quality gate
    (``cv_pipelines.models.registry``), never by a catalog save.

    Args:
        model_name: the registered model (``deployment.model_name``).
        alias: the registry alias to follow.
        cache_dir: local folder for downloaded weights, one sub-folder per run.
        metadata: kedro-viz and other plugins' metadata.
    """

    def __init__(self, *, model_name: str, alias: str, cache_dir: str, metadata: dict[str, Any] | None = None) -> None:
        self._model_name = model_name
        self._alias = alias
        self._cache_dir = Path(cache_dir)
        self.metadata = metadata

    def load(self) -> TrackedModel | None:
        """The aliased model version with its weights on disk, or None."""
        from cv_pipelines.models.runs import mlflow_client, registered_model

        return registered_model(mlflow_client(), self._model_name, self._alias, self._cache_dir)

    def save(self, data: None) -> None:
        """Refused: aliases move through the deployment's gate, not through the catalog."""
        raise NotImplementedError(f"{self._model_name}@{self._alias} is moved by the deployment pipeline's gate")

    def _exists(self) -> bool:
        return True  # "no such alias yet" is a value (None), not a missing dataset

    def _describe(self) -> dict[str, Any]:
        return {"model_name": self._model_name, "alias": self._alias, "cache_dir": str(self._cache_dir)}

    def preview(self) -> JSONPreview:
        """The aliased version and its training run, without downloading weights (kedro-viz)."""
        from cv_pipelines.models.registry import TRAINING_RUN_TAG, alias_version
        from cv_pipelines.models.runs import mlflow_client

        version = alias_version(mlflow_client(), self._model_name, self._alias)
        shown = {"model": f"{self._model_name}@{self._alias}", "version": None}
        if version is not None:
            shown |= {"version": str(version.version), "training_run_id": version.tags.get(TRAINING_RUN_TAG)}
        return JSONPreview(json.dumps(shown))
