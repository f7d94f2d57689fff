"""Catalog paths of the project's local-only datasets, resolved against the project root."""

from __future__ import annotations

from pathlib import Path

from kedro.io.core import DatasetError, get_protocol_and_path


def local_project_path(path: str | Path, *, dataset: str, why: str) -> Path:
    """``path`` (plain or ``file://``) as an absolute local path, anchored to the project root.

    Raises:
        DatasetError: ``path`` names another file system; ``why`` says what needs a local one.
    """
    from cv_pipelines.config.resolvers import in_project, project_root

    protocol, bare = get_protocol_and_path(str(path))
    if protocol != "file":
        raise DatasetError(f"{dataset} needs a local folder, not {path!r}: {why}.")
    return in_project(project_root(), bare)
