"""The main job (`make demo`) on a tiny demo, twice, in a throwaway copy of the project.

The first run is the real command (`make demo` runs it); the second calls its ``main``
in this process, which is the same code without the interpreter's start-up.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

from cv_pipelines.images.ingestion import read_images_registry
from tests.conftest import project_env


def run_main_job(project):
    return subprocess.run(
        [sys.executable, "-m", "cv_pipelines.commands.main_job", "--env", "test", "--project-path", str(project)],
        cwd=project, env=project_env(project), capture_output=True, text=True, timeout=600,
    )


def main_job_in_process(project, capsys) -> str:
    """``main_job.main`` in this process; its stdout. Fails on a non-zero status or an MLflow run left open."""
    import mlflow

    from cv_pipelines.commands import main_job

    capsys.readouterr()
    status = main_job.main(["--env", "test", "--project-path", str(project)])
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    assert mlflow.active_run() is None
    return out


def git_tags(project) -> list[str]:
    return subprocess.run(["git", "tag", "--list"], cwd=project, capture_output=True, text=True, check=True).stdout.split()


def test_the_main_job_runs_the_loop_and_a_rerun_duplicates_nothing(project, capsys):
    # One epoch on 24 tiny images learns nothing: a zero floor lets it become champion,
    # so the serving step has a model to answer with.
    parameters = project / "conf/test/parameters.yml"
    parameters.write_text(parameters.read_text() + "\ndeployment:\n  champion_floor: {map50: 0.0}\n")
    first = run_main_job(project)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "cv_pipelines main job: done" in first.stdout
    assert "24 labeled images" in first.stdout and "data/exports/demo_v1 (written" in first.stdout
    images = read_images_registry(project / "data/registry")
    assert len(images) == 24 and set(images["source_id"]) == {"coco:demo"}
    assert "1 epochs, MLflow run" in first.stdout and "test mAP50" in first.stdout
    assert len(list((project / "data/models/training").iterdir())) == 1
    assert git_tags(project) == ["data/demo/v1"] and "snapshot" in first.stdout
    export_info = yaml.safe_load((project / "data/exports/demo_v1/export_info.yaml").read_text())
    assert export_info["dataset_version"] == "data/demo/v1"  # the export read the tagged version
    assert "cv_pipelines_detector version 1 is @champion" in first.stdout
    assert "POST /predict on 127.0.0.1" in first.stdout and "from version 1" in first.stdout
    # Quiet by default: the steps' summaries, none of the libraries' own lines.
    printed = (first.stdout + first.stderr).splitlines()
    assert len(printed) <= 60, "\n".join(printed)
    chatter = ("Ultralytics", "Epoch", "ONNX", "Downloading artifacts", "Running node", "Add type hints",
               "input example", "Workflow tracking", "Registered model", "Created version", "WARNING")
    assert not [line for line in printed if any(word in line for word in chatter)], "\n".join(printed)

    second = main_job_in_process(project, capsys)
    assert "data/exports/demo_v1 (unchanged, already" in second
    assert len(read_images_registry(project / "data/registry")) == 24
    assert not (project / "data/exports/demo_v2").exists()
    assert "skipped: run" in second and "skipped, already evaluated" in second
    assert len(list((project / "data/models/training").iterdir())) == 1
    assert "skipped, nothing changed since data/demo/v1" in second and git_tags(project) == ["data/demo/v1"]
    assert "skipped: training run" in second  # no second model version

    # Another training parameter is another model: the job's check no longer finds a current
    # training (what the trainings and registrations after it do, test_training and
    # test_deployment prove; a third whole run here would only repeat them).
    from cv_pipelines.commands.main_job import _current_training, _Job

    export_hash = yaml.safe_load((project / "data/exports/demo_v1/export_info.yaml").read_text())["content_hash"]
    assert _current_training(_Job(project, "test"), export_hash)["mlflow_run_id"] in second
    parameters.write_text(parameters.read_text().replace("epochs: 1", "epochs: 2"))
    assert _current_training(_Job(project, "test"), export_hash) is None
    assert _current_training(_Job(project, "test"), "another export") is None
