"""Fixtures: every test gets a throwaway copy of the project, never the checkout.

A copy holds the project's code and configuration with its own empty ``data/``, its
own MLflow database (created on first use under ``data/mlflow``), and its own git
repository, so nothing a test does can write into this checkout or commit into its
repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cv_pipelines.config.offline import TELEMETRY_OFF
from tests.support.projects import *  # noqa: F403  (session-scoped trained templates)
from tests.support.projects import enter_project

REPO_ROOT = Path(__file__).resolve().parents[1]

#: What a project copy is made of: the code and configuration, not data or environments.
PROJECT_FILES = ("pyproject.toml", ".telemetry", ".gitignore", "dvc.yaml", "README.md")
PROJECT_DIRS = ("conf", "src", ".dvc")
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "tmp", "cache")


def _IGNORED(folder: str, names: list[str]) -> set[str]:
    """What a copy leaves out: caches, and personal credentials (conf/local), never the committed placeholders."""
    skipped = set(_SKIPPED(folder, names))
    if Path(folder).name == "local":
        skipped |= {name for name in names if name == "credentials.yml"}
    return skipped

#: Environment every project subprocess gets: offline, quiet, and pointed at the copy.
OFFLINE_ENV = {**TELEMETRY_OFF, "PYTHONWARNINGS": "ignore"}


def make_project_copy(target: Path) -> Path:
    """Copy the project's code and configuration into ``target`` and give it its own git repo."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        if (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, target / name)
    for name in PROJECT_DIRS:
        if (REPO_ROOT / name).exists():
            shutil.copytree(REPO_ROOT / name, target / name, ignore=_IGNORED)
    (target / "data").mkdir(exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=target, check=True)
    for key, value in (("user.name", "cv-tests"), ("user.email", "tests@localhost"), ("commit.gpgsign", "false")):
        subprocess.run(["git", "config", key, value], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "project copy for a test"], cwd=target, check=True)
    return target


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway copy of the project; in-process code resolves paths against it."""
    return enter_project(make_project_copy(tmp_path / "project"), monkeypatch)


def project_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CVAT_", "MLFLOW_TRACKING"))}
    env.update(OFFLINE_ENV)
    env["CV_PIPELINES_PROJECT_ROOT"] = str(root)
    env["YOLO_CONFIG_DIR"] = str(root / ".ultralytics")
    env.update(extra)
    return env


def run_kedro(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the ``kedro`` command line of this environment inside the project copy."""
    kedro = Path(sys.executable).with_name("kedro")
    return subprocess.run(
        [str(kedro), *args], cwd=root, env=env or project_env(root), capture_output=True,
        text=True, timeout=timeout,
    )


def run_pipeline(root: Path, pipeline: str, *, env: str = "test", params: dict | None = None):
    """Run a pipeline in-process through a real KedroSession; returns the runner's outputs."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=env, runtime_params=params or {}) as session:
        return session.run(pipeline_names=[pipeline])
