"""Fixtures: every test gets a throwaway copy of the project, never the checkout.

A copy holds the project's code and configuration with its own empty ``data/``, its
own MLflow database under ``data/mlflow`` (an empty, already migrated one copied from
the session's template, or none at all for ``bare_project``), and its own git
repository, so nothing a test does can write into this checkout or commit into its
repository.

For the whole session, and for every subprocess a test starts, tools keep their
settings and caches in the session's temporary folder (never in the home folder), and
nothing may reach the network beyond loopback (``tests/support/netguard``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cv_pipelines.config.offline import TELEMETRY_OFF
from tests.support.mlflow_store import create_mlflow_store
from tests.support.netguard import sitecustomize as netguard
from tests.support.projects import *  # noqa: F403  (session-scoped trained templates)
from tests.support.projects import copy_project, tree_fingerprint, use_project

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Put first on every subprocess's PYTHONPATH: its ``sitecustomize`` installs the network guard there.
NETGUARD_DIR = Path(netguard.__file__).parent

#: What a project copy is made of: the code and configuration, not data or environments.
PROJECT_FILES = ("pyproject.toml", ".telemetry", ".gitignore", "dvc.yaml", "README.md")
PROJECT_DIRS = ("conf", "src", ".dvc", "airflow")
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "tmp", "cache")


def _IGNORED(folder: str, names: list[str]) -> set[str]:
    """What a copy leaves out: caches, and personal credentials (conf/local), never the committed placeholders."""
    skipped = set(_SKIPPED(folder, names))
    if Path(folder).name == "local":
        skipped |= {name for name in names if name == "credentials.yml"}
    return skipped


#: Environment every project subprocess gets: offline, quiet, and pointed at the copy.
OFFLINE_ENV = {**TELEMETRY_OFF, "PYTHONWARNINGS": "ignore"}

#: Where tools would write into the home folder, and the session folder they get instead.
#: XDG_* covers MLflow's telemetry id, Kedro's and DVC's user config, Jupyter's data and
#: runtime files, torch's and Hugging Face's caches and Chromium's profile leftovers.
TOOL_DIRS = {
    "XDG_CONFIG_HOME": "config",
    "XDG_CACHE_HOME": "cache",
    "XDG_DATA_HOME": "share",
    "XDG_STATE_HOME": "state",
    "MPLCONFIGDIR": "matplotlib",  # matplotlib's font cache (~/.cache/matplotlib otherwise)
    "YOLO_CONFIG_DIR": "ultralytics",  # Ultralytics' settings.json, for code outside a project copy
    "IPYTHONDIR": "ipython",  # `kedro ipython` creates a profile
    "JUPYTER_CONFIG_DIR": "jupyter",  # JupyterLab's workspaces
    "DVC_SITE_CACHE_DIR": "dvc-site-cache",  # DVC's repo index cache, /var/tmp/dvc otherwise
}

_SAVED_ENV = pytest.StashKey[dict[str, str | None]]()
_REFUSALS = pytest.StashKey["NetworkRefusals"]()


@pytest.hookimpl(trylast=True)  # after the tmpdir plugin made the session's temporary folder
def pytest_configure(config: pytest.Config) -> None:
    """Before collection: tools offline and their files in the session folder; the network guard on.

    Under pytest-xdist every worker makes its own session folder (its basetemp).
    ``CV_TEST_ARTIFACTS`` (screenshots and logs the kedro-viz test leaves for a person)
    defaults to it too; set it to keep them somewhere else.
    """
    # pytest-xdist's controller orders the modules by their number of tests, which says
    # nothing of how long they take: it keeps the order of LONG_MODULES instead.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    session = config._tmp_path_factory.getbasetemp() / "session"
    session.mkdir(exist_ok=True)
    wanted = {name: str(session / folder) for name, folder in TOOL_DIRS.items()}
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(NETGUARD_DIR)]
    wanted["PYTHONPATH"] = os.pathsep.join([str(NETGUARD_DIR), *inherited])
    wanted[netguard.LOG_ENV] = str(session / "netguard.log")
    defaults = {**TELEMETRY_OFF, "CV_TEST_ARTIFACTS": str(session / "test-artifacts")}
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers share the cores: torch outside Ultralytics (ONNX export, pyfunc
        # predictions) would otherwise start a thread per core in each of them.
        defaults["OMP_NUM_THREADS"] = "1"
    config.stash[_SAVED_ENV] = {name: os.environ.get(name) for name in {*wanted, *defaults}}
    os.environ.update(wanted)
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    Path(wanted[netguard.LOG_ENV]).touch()
    config.stash[_REFUSALS] = NetworkRefusals(Path(wanted[netguard.LOG_ENV]))
    netguard.install()
    # Kedro configures logging once, when kedro.framework.project is first imported, from
    # the working directory's conf/logging.yml: dictConfig then replaces the root logger's
    # handlers, caplog's among them. Done here, from the checkout, it happens before any
    # test captures logs and always with the project's configuration.
    logging.disable(logging.INFO)  # its "Using 'conf/logging.yml'" line, printed before the first test
    try:
        with contextlib.chdir(REPO_ROOT):
            import kedro.framework.project  # noqa: F401
    finally:
        logging.disable(logging.NOTSET)


#: The modules that build the trained templates or run a whole loop, longest first, so that
#: pytest-xdist starts them before the short ones (each module runs on one worker). The two
#: that build templates come first on different workers; the module waiting for one of them
#: (test_serving on test_deployment's gate scenarios) comes only after another long module,
#: by when that template is built, instead of holding a worker idle on its lock.
LONG_MODULES = (
    "test_deployment.py", "test_stack.py", "test_serving.py", "test_training.py", "test_airflow.py",
    "test_main_job.py", "test_matrix.py", "test_labeling.py", "test_viz.py", "test_notebook.py",
    "test_dvc_stages.py", "test_snapshot_crash.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long modules first, in ``LONG_MODULES``' order; the others after, as collected (a stable sort)."""
    rank = {name: position for position, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_MODULES)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Refusals no test's teardown took (a session fixture's teardown, say) fail the session."""
    refusals = session.config.stash.get(_REFUSALS, None)
    if refusals is not None and (left := refusals.take()):
        session.config.get_terminal_writer().line(
            "network guard: tried to reach the network beyond loopback outside any test:\n" + "\n".join(left), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    netguard.uninstall()
    for name, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class NetworkRefusals:
    """The network guard's log of this session (this pytest process and its children), read in order."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._offset = 0

    def take(self) -> list[str]:
        """The attempts refused since the last ``take()``: during this test, its setup or the fixtures it started."""
        with self.log.open("rb") as lines:
            lines.seek(self._offset)
            new = lines.read()
        self._offset += len(new)
        return new.decode("utf-8", "replace").splitlines()


@pytest.fixture(autouse=True)
def network_refusals(request: pytest.FixtureRequest) -> Iterator[NetworkRefusals]:
    """Fail the test during which anything (this process or a subprocess) tried to go beyond loopback.

    The guard already refused the attempt; this makes it a failure even when the code
    that tried swallowed the error. A test that provokes refusals on purpose takes them.
    """
    refusals = request.config.stash[_REFUSALS]
    yield refusals
    if left := refusals.take():
        pytest.fail("tried to reach the network beyond loopback:\n" + "\n".join(left), pytrace=False)


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


@pytest.fixture(scope="session")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project every ``project`` copies: code, configuration, a git repo, an empty migrated MLflow store.

    Built once per session (per worker under pytest-xdist: each has its own basetemp).
    Migrating a new SQLite store takes seconds, and every Kedro session opens it
    (kedro-mlflow's setup), also for pipelines it does not track; a copy opens at once.
    No test may change the template itself: that is checked when the session ends.
    """
    root = make_project_copy(tmp_path_factory.mktemp("project_template"))
    create_mlflow_store(root)
    before = tree_fingerprint(root)
    yield root
    assert tree_fingerprint(root) == before, f"a test changed the project template {root}"


@pytest.fixture
def project(project_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway copy of the project, with an empty MLflow store; in-process code resolves paths against it."""
    return use_project(copy_project(project_template, tmp_path / "project"), monkeypatch)


@pytest.fixture
def bare_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway copy of the project without an MLflow store: for tests of what a fresh project makes itself."""
    return use_project(make_project_copy(tmp_path / "project"), monkeypatch)


def project_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess working in the project copy ``root``: offline, guarded, pointed at ``root``.

    A ``PYTHONPATH`` in ``extra`` comes after the network guard's folder, which stays first.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CVAT_", "MLFLOW_TRACKING"))}
    env.update(OFFLINE_ENV)
    env["CV_PIPELINES_PROJECT_ROOT"] = str(root)
    env["YOLO_CONFIG_DIR"] = str(root / ".ultralytics")
    env.update(extra)
    if "PYTHONPATH" in extra:
        paths = [str(NETGUARD_DIR), *(p for p in extra["PYTHONPATH"].split(os.pathsep) if p and p != str(NETGUARD_DIR))]
        env["PYTHONPATH"] = os.pathsep.join(paths)
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
