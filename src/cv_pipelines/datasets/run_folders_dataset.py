"""``RunFoldersDataset``: the folder where a tool (Ultralytics, the ONNX export) writes one run's files."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset

from cv_pipelines.files.run_folders import RunFolders


class RunFoldersDataset(AbstractDataset[None, RunFolders]):
    """Load-only: a ``RunFolders`` handle on ``path``, which makes one new folder per run.

    Ultralytics writes weights, plots and tables into a folder of its own; the catalog
    owns where those folders live (``globals.yml``), the handle names each one
    ``<UTC time>_<run id>`` so no run ever writes over another.

    Args:
        path: the folder that holds the run folders, relative to the project or absolute.
        metadata: kedro-viz and other plugins' metadata.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = path
        self.metadata = metadata

    def load(self) -> RunFolders:
        """A handle on the run folders (nothing is created until a run asks for its folder)."""
        from cv_pipelines.config.resolvers import in_project, project_root

        return RunFolders(in_project(project_root(), self._path))

    def save(self, data: None) -> None:
        """Refused: run folders are written by the tools that run in them."""
        raise NotImplementedError("run folders are written by the tools that run in them")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
