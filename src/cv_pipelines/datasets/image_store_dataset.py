"""The image store and its images registry as Kedro datasets.

``ImageStoreDataset`` (the ``images_registry`` entry): loading gives the images
registry; saving an :class:`~cv_pipelines.images.ingestion.IngestionPlan` commits it,
with today's journaled, crash-safe transaction. ``StoreLayoutDataset`` (the
``image_store`` entry): a load-only handle with the store's folders, for the steps
that hand them to a service (DVC snapshots, CVAT's shared storage).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset
from kedro.io.core import DatasetError
from kedro_datasets._typing import TablePreview

from cv_pipelines.datasets._paths import local_project_path
from cv_pipelines.datasets.parquet_registry_dataset import ParquetRegistryDataset
from cv_pipelines.images.ingestion import IngestionPlan, StoreLayout, commit_ingestion

logger = logging.getLogger(__name__)

_LOCAL_WHY = "the store is written with hard links, file locks and atomic renames"


def _layout(store: str, registry: str, quarantine: str) -> StoreLayout:
    from cv_pipelines.config.resolvers import project_root

    paths = [local_project_path(p, dataset="ImageStoreDataset", why=_LOCAL_WHY) for p in (store, registry, quarantine)]
    return StoreLayout(project_root(), *paths)


class ImageStoreDataset(AbstractDataset[IngestionPlan, pd.DataFrame]):
    """The content-addressed image store and its images registry, written as one transaction.

    ``save(plan)`` commits an ingestion plan (``images/ingestion.py``): under the
    registries' writer lock it first finishes any ingestion a crash interrupted, then
    journals the run, commits the images registry part, hard-links (or, for a folder
    the user keeps, copies) each new image into the store, quarantines the rejects with
    their rejections part, removes consumed inputs from the drop zone and deletes the
    journal. The registry part, the store links, the rejections and the removals must
    stay inside that one lock-held transaction (a crash between two of them is what the
    journal replays), which is why they are one save and not separate catalog entries.
    The rejections registry is written there too; read it as ``rejections_registry``.

    ``load()`` gives the images registry (one row per stored image), as of ``rev``
    when given (read-only then). Example::

        images_registry:
          type: cv_pipelines.datasets.image_store_dataset.ImageStoreDataset
          store: ${globals:paths.store}
          registry: ${globals:paths.registry}
          quarantine: ${globals:paths.quarantine}
          rev: ${runtime_params:dataset_version, null}

    Folders must be local (plain or ``file://``).
    """

    def __init__(
        self,
        *,
        store: str,
        registry: str,
        quarantine: str,
        rev: str | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Point at the store, the registries' folder and the quarantine (project-relative or absolute)."""
        self._layout = _layout(store, registry, quarantine)
        self._rev = rev or None
        self._registry = ParquetRegistryDataset(
            path=str(self._layout.images_registry), rev=self._rev, load_args=load_args
        )
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        """The images registry: one row per stored image, paths relative to the project root."""
        return self._registry.load()

    def check_loadable(self) -> None:
        """Refuse a ``rev`` that names no dataset version with one sentence, before any node runs."""
        self._registry.check_loadable()

    def save(self, data: IngestionPlan) -> None:
        """Commit the ingestion plan ``data``; logs one line saying what it did."""
        if self._rev is not None:
            raise DatasetError(
                f"the image store is loaded as of dataset version {self._rev!r}, which is read-only; "
                "run without --params dataset_version to ingest."
            )
        result = commit_ingestion(data, self._layout)
        logger.info("Ingestion of %s: %s", self._layout.relative_to_root(data.folder), result.summary())

    def _exists(self) -> bool:
        return self._registry.exists()

    def _describe(self) -> dict[str, Any]:
        layout = self._layout
        return {"store": str(layout.store), "registry": str(layout.registry), "rev": self._rev}

    def preview(self, nrows: int = 20) -> TablePreview:
        """The newest ``nrows`` registered images, for kedro-viz's table preview."""
        return self._registry.preview(nrows)


class StoreLayoutDataset(AbstractDataset[None, StoreLayout]):
    """A load-only handle on the image store's folders (``StoreLayout``), for service calls.

    DVC snapshots the store and the registries as folders, and CVAT's shared storage
    names images by their path in the store, so those steps need the folders rather
    than the rows. Takes the same arguments as :class:`ImageStoreDataset`.
    """

    def __init__(self, *, store: str, registry: str, quarantine: str, metadata: dict[str, Any] | None = None) -> None:
        """Point at the store, the registries' folder and the quarantine."""
        self._layout = _layout(store, registry, quarantine)
        self.metadata = metadata

    def load(self) -> StoreLayout:
        """The folders, as absolute paths with the project root they are relative to."""
        return self._layout

    def save(self, data: None) -> None:
        """Refuse: images enter the store through ``images_registry`` (an ingestion plan)."""
        raise DatasetError("image_store is a handle on the store's folders; save an ingestion plan to images_registry.")

    def _exists(self) -> bool:
        return self._layout.store.exists()

    def _describe(self) -> dict[str, Any]:
        return {"store": str(self._layout.store), "registry": str(self._layout.registry)}
