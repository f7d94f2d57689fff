"""OmegaConf resolvers used by ``conf/``: paths that must be absolute at run time.

Config files hold project-relative paths only; these resolvers anchor them to the
project that is running (a fresh clone, a test's throwaway copy, a server checkout),
so nothing machine-specific is ever written into ``conf/``.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROJECT_ROOT_ENV = "CV_PIPELINES_PROJECT_ROOT"


def project_root() -> Path:
    """The root of the Kedro project being run.

    Found the way Kedro finds it (walking up from the working directory to the
    ``pyproject.toml`` with a ``[tool.kedro]`` section); the environment variable lets
    an orchestrator run from elsewhere.
    """
    explicit = os.environ.get(_PROJECT_ROOT_ENV)
    if explicit:
        return Path(explicit).resolve()
    from kedro.utils import find_kedro_project

    found = find_kedro_project(Path.cwd())
    return Path(found).resolve() if found else Path.cwd().resolve()


def in_project(root: Path, path: str | Path) -> Path:
    """``path`` from the configuration, anchored to the project ``root`` unless absolute."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def project_relative(path: str | Path, root: Path) -> str:
    """``path`` as reports and MLflow tags show it: relative to ``root`` when inside it."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _project_path(relative: str = "") -> str:
    return str(project_root() / relative) if relative else str(project_root())


def _mlflow_tracking_uri(server: str | None = None, relative_db: str = "data/mlflow/mlflow.db") -> str:
    """Where MLflow tracks: ``MLFLOW_TRACKING_URI`` when set, else ``server``, else the embedded SQLite store.

    ``server`` is the environment's ``mlflow_server`` global (``conf/stack/globals.yml``
    names the team set-up's tracking server; ``conf/base`` none). MLflow 3.17 refuses the
    file store, and a relative ``sqlite:///`` URI resolves against the working directory,
    so the embedded store gets an absolute path.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    if server:
        return server
    db_path = project_root() / relative_db
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db_path}"


def _mlflow_artifact_location(server: str | None = None, relative: str = "data/mlflow/artifacts") -> str | None:
    """Where a new experiment keeps artifacts: the server's default when one is used."""
    if os.environ.get("MLFLOW_TRACKING_URI") or server:
        return None
    return (project_root() / relative).as_uri()


CUSTOM_RESOLVERS = {
    "project_path": _project_path,
    "mlflow_tracking_uri": _mlflow_tracking_uri,
    "mlflow_artifact_location": _mlflow_artifact_location,
}
