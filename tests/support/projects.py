"""Session-wide project templates: built once, read in place by tests that only read, copied by tests that write.

- ``exported_template``: the project with the demo export ``demo_v1`` (24 images of 96 px) and
  its MLflow store (already migrated), no runs.
- ``trained_template``: a copy of it with run A (``training``, 2 epochs), A's ``evaluation``, and
  run B (``training,evaluation`` in one kedro run, 1 epoch, evaluating itself).
- ``learned_template``: its own larger export (``LEARNED_DEMO``), run U (1 epoch of 64 px: learns
  nothing) and run L (``training,evaluation``, ``LEARNED_TRAINING``: clears the default floor).
- ``gate_scenarios``: the champion gate at its defaults on copies of learned_template, U and L in
  both orders; ``deployed_project`` is the "L first" one: L champion v1, U challenger v2.

The builders of the first three run in a subprocess (nothing of theirs stays open in this
process). Each template is fingerprinted when built, and the session's teardown fails if
any template changed: a test reads a template only through ``MlflowClient`` or file reads,
and copies it (``copy_project``) for anything else. Copies get their own MLflow store with
every absolute path of the template rewritten (``relocate_mlflow_store``), or a run made in
the copy would write its artifacts into the template.

Under pytest-xdist every worker shares one build (a FileLock beside it); without it the
templates live in the session's basetemp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlflow_store import STORE, copy_mlflow_store, relocate_mlflow_store

__all__ = [
    "deployed_copy",
    "deployed_project",
    "exported_template",
    "gate_scenarios",
    "learned_template",
    "templates_unchanged",
    "trained_template",
]

MODEL = "cv_pipelines_detector"

#: The learned template's export and training: the cheapest measured to clear the default
#: champion floor (test mAP50 >= 0.1) with a margin: 0.166, in 73 s where yolov8n's 20
#: epochs took 116 s for 0.128. The model is yolov8n at half its width (models/), at lr0
#: 0.01 (its 0.003 gives 0.120). ``val: false`` validates at the last epoch only, a fifth
#: less time; best.pt is then last.pt. Measured below the floor: 16 epochs (0.103, too
#: close), 12 (0.011), a quarter of yolov8n's width (0.089), 3 objects per image (0.0).
LEARNED_DEMO = {"num_images": 160, "image_size": 128}
LEARNED_TRAINING = {
    "model": str(Path(__file__).parent / "models/yolov8-narrow.yaml"),
    "epochs": 20, "imgsz": 128, "batch": 16, "extra_args": {"val": False, "lr0": 0.01},
}

_BUILD = """
import hashlib, json, sys
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

root, steps, out = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
bootstrap_project(root)
digests = {}
for step in steps:
    if step[0] == "digest":  # sha256 of every file of every training run folder, at this point
        folder = root / "data/models/training"
        digests[step[1]] = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                            for p in sorted(folder.rglob("*")) if p.is_file()}
        continue
    pipelines, params = step
    session = KedroSession.create(project_path=root, env="test", runtime_params=params)
    with session:
        session.run(pipeline_names=pipelines)
out.write_text(json.dumps(digests))
"""


def _export_steps(demo: dict | None = None) -> list:
    return [
        [["demo_data"], {"demo_data": demo} if demo else {}],
        [["ingestion"], {}],
        [["import_coco"], {"import_coco": {"source": "data/demo", "name": "demo"}}],
        [["export"], {}],
    ]


# --- records, fingerprints, copies --------------------------------------------------------


@dataclass
class Template:
    """A built template: its root, the run ids it holds by role, digests taken while it was built."""

    root: Path
    runs: dict[str, str] = field(default_factory=dict)
    digests: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, list[int]] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "root": str(self.root)}))

    @classmethod
    def load(cls, path: Path) -> Template:
        record = json.loads(path.read_text())
        return cls(**{**record, "root": Path(record["root"])})


def tree_fingerprint(root: Path) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of every file under ``root``: compared to prove a template untouched."""
    return {
        path.relative_to(root).as_posix(): [path.lstat().st_size, path.lstat().st_mtime_ns]
        for path in sorted(root.rglob("*"))
        if not path.is_dir() or path.is_symlink()
    }


def copy_project(template: Path, target: Path) -> Path:
    """A private copy at ``target`` of the project ``template``: every file, its git repository, its MLflow store.

    The store is copied through SQLite's backup and rewritten to name ``target`` wherever
    it named ``template`` (artifact folders, the Default experiment, dataset sources,
    model versions), so runs made in the copy write their artifacts into the copy, never
    into the template.
    """
    db = template / STORE
    sqlite_files = {db.name, f"{db.name}-journal", f"{db.name}-wal", f"{db.name}-shm"}

    def store_files(folder: str, names: list[str]) -> set[str]:
        return sqlite_files & set(names) if Path(folder) == db.parent else set()

    shutil.copytree(template, target, symlinks=True, ignore=store_files)
    if db.exists():
        copy_mlflow_store(db, target / STORE)
        relocate_mlflow_store(target / STORE, template, target)
    return target


def use_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ``root`` the current project of this process: its environment and working directory."""
    from tests.conftest import OFFLINE_ENV  # conftest imports this module: not at its top

    monkeypatch.setenv("CV_PIPELINES_PROJECT_ROOT", str(root))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(root / ".ultralytics"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CVAT_HOST", raising=False)
    monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
    for name, value in OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(root)
    return root


def use_template(template: Template | Path, target: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of ``template`` at ``target``, made the current project."""
    root = template.root if isinstance(template, Template) else template
    return use_project(copy_project(root, target), monkeypatch)


def mlflow_client(root: Path):
    """A client of the project ``root``'s own MLflow store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / STORE}")


def runs_of(root: Path, pipeline: str) -> list:
    """The runs of every experiment tagged ``cv_pipelines.<pipeline> = 'true'`` (``training`` or
    ``evaluation``), oldest first."""
    client = mlflow_client(root)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`cv_pipelines.{pipeline}` = 'true'",
                              order_by=["attributes.start_time ASC"])


def registry_state(root: Path) -> dict[str, list[str]]:
    """{version: sorted aliases} of the registered model."""
    client = mlflow_client(root)
    return {
        str(v.version): sorted(client.get_model_version(MODEL, v.version).aliases)
        for v in client.search_model_versions(f"name = '{MODEL}'")
    }


def last_deployment(root: Path) -> dict:
    import yaml

    return yaml.safe_load((root / "data/reporting/deployment/last_deployment.yml").read_text())


# --- running the project in this process --------------------------------------------------


def run_in_process(root: Path, pipelines: list[str], params: dict | None = None):
    """``kedro run --pipelines <pipelines> --env test`` through a real KedroSession in this process.

    Fails if the session left an MLflow run open in this process.
    """
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    try:
        session = KedroSession.create(project_path=root, env="test", runtime_params=params or {})
        with session:
            return session.run(pipeline_names=pipelines)
    finally:
        assert mlflow.active_run() is None, "the session left an MLflow run open"


# --- builders ----------------------------------------------------------------------------


def _build(root: Path, steps: list) -> dict[str, dict[str, str]]:
    """Run ``steps`` (``[pipelines, params]`` or ``["digest", name]``) in one subprocess in ``root``."""
    from tests.conftest import project_env

    out = root.parent / "digests.json"
    result = subprocess.run(
        [sys.executable, "-c", _BUILD, str(root), json.dumps(steps), str(out)],
        cwd=root, env=project_env(root), capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def build_exported(target: Path) -> Template:
    """The project with the demo export demo_v1 (24 images of 96 px) and no runs."""
    from tests.conftest import make_project_copy

    root = make_project_copy(target)
    _build(root, _export_steps())
    return Template(root)


def build_trained(exported: Template, target: Path) -> Template:
    """A copy of ``exported`` with A (2 epochs) and its evaluation, then B (``training,evaluation``, 1 epoch)."""
    root = copy_project(exported.root, target)
    digests = _build(root, [
        [["training"], {"training": {"epochs": 2}}],
        [["evaluation"], {}],
        ["digest", "after_A"],
        [["training", "evaluation"], {"training": {"epochs": 1}}],
        ["digest", "after_B"],
    ])
    a, b = runs_of(root, "training")
    [a_evaluation] = [r for r in runs_of(root, "evaluation") if r.info.run_id != b.info.run_id]
    return Template(root, runs={"A": a.info.run_id, "A_evaluation": a_evaluation.info.run_id, "B": b.info.run_id},
                    digests=digests)


def build_learned(target: Path) -> Template:
    """Its own export (``LEARNED_DEMO``); U: 1 epoch of 64 px; L: ``LEARNED_TRAINING`` and its evaluation, in one run."""
    from tests.conftest import make_project_copy

    root = make_project_copy(target)
    _build(root, [
        *_export_steps(LEARNED_DEMO),
        [["training"], {}],
        [["training", "evaluation"], {"training": LEARNED_TRAINING}],
    ])
    u, learned = runs_of(root, "training")
    return Template(root, runs={"U": u.info.run_id, "L": learned.info.run_id})


def build_gate_scenarios(learned: Template, folder: Path) -> Template:
    """The champion gate at the default floor and tolerance on copies of ``learned``: each step's outcome.

    - "U first": U evaluated and deployed (held by the floor, v1), deployed again (skipped);
      L evaluated and deployed (first champion, v2); a rollback (no champion before v2).
    - "U champion, then L", floor 0: U champion v1; L evaluated against it, promoted (v2);
      rolled back to v1.
    - "L first" (``deployed_project``): L, evaluated in its own training run, deployed
      (champion v1); U evaluated against it and deployed (held by the floor, v2).
    - "worse", floor 0: the same evaluation of U against champion L, deployed: held, worse.
    """
    from cv_pipelines.errors import ConfigurationError

    steps: dict[str, Any] = {}
    floor_zero = {"deployment": {"champion_floor": {"map50": 0.0}}}
    u, learned_run = learned.runs["U"], learned.runs["L"]
    with pytest.MonkeyPatch.context() as monkeypatch:

        def at(source: Path, name: str) -> Path:
            return use_project(copy_project(source, folder / name), monkeypatch)

        # The project's paths follow CV_PIPELINES_PROJECT_ROOT: every step enters its project first.
        def evaluate(root: Path, run_id: str) -> None:
            run_in_process(use_project(root, monkeypatch), ["evaluation"], {"evaluation": {"run_id": run_id}})

        def deploy(root: Path, name: str, params: dict | None = None) -> None:
            run_in_process(use_project(root, monkeypatch), ["deployment"], params)
            steps[name] = {"summary": last_deployment(root), "registry": registry_state(root)}

        u_evaluated = at(learned.root, "u-evaluated")
        evaluate(u_evaluated, u)

        u_first = at(u_evaluated, "u-first")
        deploy(u_first, "below_floor")
        deploy(u_first, "again")
        evaluate(u_first, learned_run)
        deploy(u_first, "first_champion")
        try:
            run_in_process(use_project(u_first, monkeypatch), ["deployment"], {"deployment": {"action": "rollback"}})
            steps["early_rollback_error"] = None
        except ConfigurationError as exc:
            steps["early_rollback_error"] = exc.message

        compared = at(u_evaluated, "u-champion")
        deploy(compared, "u_champion", floor_zero)
        evaluate(compared, learned_run)
        deploy(compared, "promoted", floor_zero)
        deploy(compared, "rolled_back", {"deployment": {"action": "rollback"}})
        client = mlflow_client(compared)
        steps["rolled_back"]["champion_history"] = json.loads(client.get_registered_model(MODEL).tags["champion_history"])
        steps["rolled_back"]["v2_tags"] = dict(client.get_model_version(MODEL, "2").tags)

        deployed = at(learned.root, "project")
        deploy(deployed, "l_champion")
        evaluate(deployed, u)
        worse = at(deployed, "worse")
        deploy(deployed, "u_held")
        steps["worse_evaluated_against"] = _evaluated_against(worse)
        deploy(worse, "worse", floor_zero)
    return Template(deployed, runs=dict(learned.runs), extra={"steps": steps, "compared_root": str(compared),
                                                              "u_first_root": str(u_first)})


def _evaluated_against(root: Path) -> str | None:
    import yaml

    summary = yaml.safe_load((root / "data/reporting/evaluation/last_evaluation.yml").read_text())
    return (summary.get("champion") or {}).get("version")


# --- session fixtures --------------------------------------------------------------------

_GUARDED: list[Template] = []


def _shared(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Template]) -> Template:
    """The template ``name``, built once per session (once for all pytest-xdist workers) and guarded."""
    from filelock import FileLock

    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, shared by its workers
    folder = base / f"template-{name}"
    record = folder / "record.json"
    with FileLock(str(folder) + ".lock"):
        if not record.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            template = build(folder)
            template.fingerprint = tree_fingerprint(template.root)
            template.save(record)
    template = Template.load(record)
    _GUARDED.append(template)
    return template


@pytest.fixture(scope="session", autouse=True)
def templates_unchanged() -> Iterator[None]:
    """At the end of the session, every template used is exactly as it was built."""
    yield
    for template in _GUARDED:
        now = tree_fingerprint(template.root)
        changed = sorted(k for k in now.keys() | template.fingerprint.keys() if now.get(k) != template.fingerprint.get(k))
        assert not changed, f"template {template.root} was changed by a test: {changed[:20]}"


@pytest.fixture(scope="session")
def exported_template(tmp_path_factory) -> Template:
    return _shared(tmp_path_factory, "exported", lambda folder: build_exported(folder / "project"))


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory, exported_template) -> Template:
    return _shared(tmp_path_factory, "trained", lambda folder: build_trained(exported_template, folder / "project"))


@pytest.fixture(scope="session")
def learned_template(tmp_path_factory) -> Template:
    return _shared(tmp_path_factory, "learned", lambda folder: build_learned(folder / "project"))


@pytest.fixture(scope="session")
def gate_scenarios(tmp_path_factory, learned_template) -> Template:
    return _shared(tmp_path_factory, "deployed", lambda folder: build_gate_scenarios(learned_template, folder))


@pytest.fixture(scope="module")
def deployed_copy(gate_scenarios, tmp_path_factory) -> Path:
    """A copy of the "L first" project for one module's tests; ``deployed_project`` enters it."""
    # Loading ``models:/`` from a local store writes registered_model_meta into the store's
    # model folder, so even the tests that only load and predict get a copy (one per module).
    return copy_project(gate_scenarios.root, tmp_path_factory.mktemp("deployed") / "project")


@pytest.fixture
def deployed_project(deployed_copy, monkeypatch) -> Path:
    """A copy of the "L first" project (champion v1 = L, challenger v2 = U), as the current project.

    Shared by the tests of a module: they load and serve the models, and change nothing else.
    """
    import mlflow

    root = use_project(deployed_copy, monkeypatch)
    mlflow.set_tracking_uri(f"sqlite:///{root / STORE}")
    return root
