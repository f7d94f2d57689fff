"""Training and evaluation pipelines: real Ultralytics runs tracked in a real SQLite MLflow store.

Tests that only read use the session's trained templates in place (``tests.support.projects``:
trained_template's run A and B, learned_template's run L); tests that train or evaluate
work in their own copy of a template, with its own relocated MLflow store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import project_env
from tests.support.cli import kedro_cli
from tests.support.projects import LEARNED_TRAINING, Template, mlflow_client, run_in_process, runs_of, use_template

#: The demo export as one script (used by bench/bench_training.py; the tests' templates
#: are built by tests.support.projects).
BUILD_EXPORT = """
import sys
from pathlib import Path
from cv_pipelines.commands.main_job import _run_pipeline
from kedro.framework.startup import bootstrap_project
root = Path(sys.argv[1])
bootstrap_project(root)
params = dict(arg.split("=", 1) for arg in sys.argv[2:])
demo = {k.split(".", 1)[1]: int(v) for k, v in params.items() if k.startswith("demo_data.")}
_run_pipeline(root, "demo_data", "test", {"demo_data": demo} if demo else None)
_run_pipeline(root, "ingestion", "test")
_run_pipeline(root, "import_coco", "test", {"import_coco": {"source": "data/demo", "name": "demo"}})
_run_pipeline(root, "export", "test")
"""


@pytest.fixture
def exported(exported_template, tmp_path, monkeypatch) -> Path:
    """A throwaway project holding the export demo_v1 (24 tiny images) and no MLflow runs."""
    return use_template(exported_template, tmp_path / "project", monkeypatch)


@pytest.fixture
def trained(trained_template, tmp_path, monkeypatch) -> Path:
    """A throwaway copy of trained_template (runs A and B), to train or evaluate in."""
    return use_template(trained_template, tmp_path / "project", monkeypatch)


def run_of(root: Path, run_id: str):
    return mlflow_client(root).get_run(run_id)


def export_info(root: Path, name: str = "demo_v1") -> dict:
    return yaml.safe_load((root / "data/exports" / name / "export_info.yaml").read_text())


def git_head(root: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def artifact_file(root: Path, run, path: str) -> Path:
    """The local file of one of ``run``'s artifacts (the store is a folder of the project)."""
    return Path(run.info.artifact_uri.removeprefix("file://")) / path


def refused(result, sentence: str) -> None:
    """``result`` (``kedro_cli``) is a refusal with exit status 2 and ``sentence`` on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # a ClickException, not an error escaping the command
    assert sentence in result.stderr, result.stderr


# --- training -----------------------------------------------------------------------------


def test_training_is_one_finished_run_with_history_artifacts_and_lineage(trained_template: Template):
    root = trained_template.root  # read only
    run = run_of(root, trained_template.runs["A"])  # `training`, 2 epochs, alone in its kedro run
    client = mlflow_client(root)
    all_runs = client.search_runs([run.info.experiment_id], order_by=["attributes.start_time ASC"])
    # One MLflow run per tracked kedro run of the template, and no run of Ultralytics' own.
    assert [r.data.tags.get("mlflow.runName") for r in all_runs] == [
        "import_coco", "export", "training", "evaluation", "training+evaluation"]
    assert [r.info.run_id for r in all_runs[2:]] == [trained_template.runs[k] for k in ("A", "A_evaluation", "B")]
    assert run.info.status == "FINISHED"

    # Parameters from params:training, per-epoch history with the epoch as step.
    assert run.data.params["training.epochs"] == "2" and run.data.params["training.seed"] == "0"
    for name in ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/precision", "val/recall", "val/mAP50",
                 "val/mAP50-95"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name

    # Artifacts: weights, results table, confusion matrix and curves.
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    weights = {a.path for a in client.list_artifacts(run.info.run_id, "weights")}
    assert {"weights/best.pt", "weights/last.pt"} <= weights
    assert {"results.csv", "confusion_matrix.png", "BoxPR_curve.png", "args.yaml", "last_training.yml"} <= top

    # Lineage: the export as a dataset input, and tags for searching; the code's commit, clean.
    info = export_info(root)
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "demo_v1"
    assert dataset_input.dataset.digest == info["content_hash"][:32]
    input_tags = {tag.key: tag.value for tag in dataset_input.tags}
    assert input_tags["export_content_hash"] == info["content_hash"]
    assert input_tags["dataset_commit"] == info["dataset_commit"]
    assert input_tags["registries_hash"] == info["registries_hash"]
    assert run.data.tags["data.export_content_hash"] == info["content_hash"]
    assert run.data.tags["code_commit"] == git_head(root)
    assert run.data.tags["mlflow.source.git.commit"] == git_head(root)
    assert run.data.tags["code_dirty"] == "false"

    # Ultralytics' arguments: deterministic, seeded, the tuned extra_args passed through.
    run_dir = root / run.data.tags["cv_pipelines.run_dir"]
    args = yaml.safe_load((run_dir / "args.yaml").read_text())
    assert args["deterministic"] is True and args["seed"] == 0 and args["optimizer"] == "AdamW"
    # The run's own copy of the summary (the project's last_training.yml is B's by now).
    summary = yaml.safe_load(artifact_file(root, run, "last_training.yml").read_text())
    assert summary["mlflow_run_id"] == run.info.run_id and summary["epochs_done"] == 2
    assert (run_dir / "training_summary.yaml").is_file()


def test_a_local_checkpoint_is_fine_tuned_and_a_missing_one_refused(trained, trained_template):
    first = run_of(trained, trained_template.runs["A"])
    weights = f"{first.data.tags['cv_pipelines.run_dir']}/weights/best.pt"  # project-relative
    # A local change to a tracked file: the run records that its code differs from the commit.
    (trained / "README.md").write_text((trained / "README.md").read_text() + "\nlocal change\n")
    before = len(runs_of(trained, "training"))
    run_in_process(trained, ["training"], {"training": {"model": weights}})
    second = runs_of(trained, "training")[-1]
    assert len(runs_of(trained, "training")) == before + 1
    assert second.data.params["training.model"] == weights
    assert second.data.tags["code_dirty"] == "true" and second.data.tags["code_commit"] == git_head(trained)
    args = yaml.safe_load((trained / second.data.tags["cv_pipelines.run_dir"] / "args.yaml").read_text())
    assert args["model"] == str(trained / weights)

    missing = kedro_cli(trained, "run", "--pipelines", "training", "--env", "test", "--params",
                        "training.model=nowhere/best.pt")
    refused(missing, "model weights 'nowhere/best.pt' do not exist")
    assert len(runs_of(trained, "training")) == before + 1


def test_asking_for_a_missing_gpu_stops_before_training_with_one_sentence(exported):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = kedro_cli(exported, "run", "--pipelines", "training", "--env", "test", "--params", "training.device=0")
    refused(result, "training.device is '0' but this machine has no usable CUDA GPU")
    assert not (exported / "data/models/training").exists()


def test_training_needs_an_export_and_names_the_missing_version(project):
    missing = kedro_cli(project, "run", "--pipelines", "training", "--env", "test")
    refused(missing, "there is no export of label set 'demo'")
    assert "kedro run --pipelines export" in missing.stderr


def epochs_logged(root: Path, name: str = "val/mAP50") -> int:
    """How many epochs a running training has logged (read straight from the store it writes)."""
    try:
        with sqlite3.connect(f"file:{root / 'data/mlflow/mlflow.db'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM metrics WHERE key = ?", (name,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked by the writer for a moment
        return 0


def test_a_killed_training_resumes_from_last_pt_in_its_own_folder(exported):
    command = [str(Path(sys.executable).with_name("kedro")), "run", "--pipelines", "training", "--env", "test",
               "--params", "training.epochs=3"]
    process = subprocess.Popen(command, cwd=exported, env=project_env(exported), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    training_dir = exported / "data/models/training"
    deadline = time.monotonic() + 300
    try:
        # Epoch 1 logged means its last.pt is written (Ultralytics saves, then calls the
        # callback that logs); the kill lands in epoch 2, long before its checkpoint.
        while epochs_logged(exported) < 1:
            assert process.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    [run_dir] = [p for p in training_dir.iterdir() if p.is_dir()]
    assert zipfile.is_zipfile(run_dir / "weights/last.pt")
    assert not (run_dir / "training_summary.yaml").exists()
    [killed] = runs_of(exported, "training")
    assert killed.info.status == "RUNNING"  # SIGKILL leaves no chance to end it

    run_in_process(exported, ["training"], {"training": {"resume": True}})

    assert [p for p in training_dir.iterdir() if p.is_dir()] == [run_dir]
    results = pd.read_csv(run_dir / "results.csv")
    assert results["epoch"].tolist() == [1, 2, 3]
    assert (run_dir / "training_summary.yaml").is_file()
    resumed = [r for r in runs_of(exported, "training") if r.info.run_id != killed.info.run_id]
    assert len(resumed) == 1 and resumed[0].info.status == "FINISHED"
    assert resumed[0].data.tags["resumed_from_run_id"] == killed.info.run_id

    # The resumed run shows the whole curve, each epoch once: the epochs before the kill
    # as the killed run logged them (the one a kill can catch between checkpoint and log
    # from results.csv), the rest logged live.
    client = mlflow_client(exported)
    before_kill = {m.step: m.value for m in client.get_metric_history(killed.info.run_id, "val/mAP50")}
    curve = client.get_metric_history(resumed[0].info.run_id, "val/mAP50")
    assert sorted(m.step for m in curve) == [1, 2, 3]
    assert {m.step: m.value for m in curve if m.step in before_kill} == before_kill
    by_epoch = results.set_index("epoch")["metrics/mAP50(B)"]
    for point in curve:
        assert point.value == pytest.approx(by_epoch[point.step], rel=1e-4, abs=1e-6), point.step
    assert not list(run_dir.glob("weights/.*.partial"))  # checkpoints are renamed into place whole

    # Nothing left to resume now: the request is refused with the reason.
    again = kedro_cli(exported, "run", "--pipelines", "training", "--env", "test", "--params", "training.resume=true")
    refused(again, "no interrupted training")


def test_resume_refuses_a_checkpoint_that_is_not_whole(tmp_path):
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.files.run_folders import RunFolders
    from cv_pipelines.models.training import RUN_FILE, interrupted_run

    folders = RunFolders(tmp_path / "training")
    run_dir = folders.new("abc")
    (run_dir / RUN_FILE).write_text("model: yolov8n.yaml\n")
    (run_dir / "weights").mkdir()
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        archive.writestr("archive/data.pkl", b"x" * 10_000)
    (run_dir / "weights/last.pt").write_bytes(whole.read_bytes())
    assert interrupted_run(folders) == run_dir
    # What a kill in the middle of a write leaves: the start of the file, no zip directory.
    (run_dir / "weights/last.pt").write_bytes(whole.read_bytes()[:5_000])
    for wanted in (None, str(run_dir)):
        with pytest.raises(ConfigurationError, match=r"its weights/last\.pt is not a whole checkpoint"):
            interrupted_run(folders, wanted)


def test_the_same_seed_gives_the_same_metrics_and_weights(trained, trained_template):
    import torch

    b = run_of(trained, trained_template.runs["B"])  # 1 epoch, trained in a `training,evaluation` run
    run_in_process(trained, ["training"], {"training": {"epochs": 1}})
    again = runs_of(trained, "training")[-1]
    assert again.info.run_id not in trained_template.runs.values()
    client = mlflow_client(trained)
    names = sorted(n for n in b.data.metrics if n.startswith(("train/", "val/", "lr/")) and n != "train/elapsed_s")
    assert "val/mAP50" in names and "train/box_loss" in names
    for name in names:
        history = [(m.step, m.value) for m in client.get_metric_history(b.info.run_id, name)]
        assert [(m.step, m.value) for m in client.get_metric_history(again.info.run_id, name)] == history, name

    def tensors(run) -> dict:
        weights = trained / run.data.tags["cv_pipelines.run_dir"] / "weights/best.pt"
        return torch.load(weights, map_location="cpu", weights_only=False)["model"].float().state_dict()

    first, second = tensors(b), tensors(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


# --- evaluation ---------------------------------------------------------------------------


def test_evaluation_of_the_latest_training_on_the_test_split(trained, trained_template):
    first, latest = (run_of(trained, trained_template.runs[k]) for k in ("A", "B"))
    assert latest.info.start_time > first.info.start_time

    # Each training has its own folder, named after its run; the earlier one was left
    # untouched by the later training (digests taken while the template was built).
    first_dir = trained / first.data.tags["cv_pipelines.run_dir"]
    latest_dir = trained / latest.data.tags["cv_pipelines.run_dir"]
    assert latest_dir != first_dir and latest_dir.parent == first_dir.parent
    assert first.info.run_id[:12] in first_dir.name and latest.info.run_id[:12] in latest_dir.name
    earlier = {k: v for k, v in trained_template.digests["after_B"].items() if k.startswith(f"{first_dir.relative_to(trained)}/")}
    assert earlier and earlier == {
        k: v for k, v in trained_template.digests["after_A"].items() if k.startswith(f"{first_dir.relative_to(trained)}/")
    }

    before = {r.info.run_id for r in runs_of(trained, "evaluation")}
    run_in_process(trained, ["evaluation"])
    [evaluation] = [r for r in runs_of(trained, "evaluation") if r.info.run_id not in before]
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["evaluated_run_id"] == latest.info.run_id
    assert evaluation.data.tags["data.export_content_hash"] == export_info(trained)["content_hash"]
    for name in ("test/mAP50", "test/mAP50-95", "test/precision", "test/recall"):
        assert 0.0 <= evaluation.data.metrics[name] <= 1.0, name

    reporting = trained / "data/reporting/evaluation"
    per_class = pd.read_csv(reporting / "per_class.csv")
    assert per_class["class"].tolist() == ["circle", "square", "triangle", "star", "ring"]
    test_boxes = sum(
        len((trained / "data/exports/demo_v1/labels/test" / f"{p.stem}.txt").read_text().splitlines())
        for p in (trained / "data/exports/demo_v1/images/test").iterdir()
    )
    assert per_class["instances"].sum() == test_boxes  # the test split, not val or train
    worst = pd.read_csv(reporting / "worst_images.csv")
    assert list(worst.columns) == ["image_id", "file", "missed", "spurious", "correct", "errors"]
    assert (worst["errors"] == worst["missed"] + worst["spurious"]).all()
    assert worst["errors"].is_monotonic_decreasing
    for plot in ("confusion_matrix.png", "pr_curve.png", "per_class_ap.png"):
        with Image.open(reporting / plot) as image:
            assert image.size[0] > 300
    artifacts = {a.path for a in mlflow_client(trained).list_artifacts(evaluation.info.run_id)}
    assert {"per_class.csv", "worst_images.csv", "confusion_matrix.png", "pr_curve.png", "last_evaluation.yml"} <= artifacts
    summary = yaml.safe_load((reporting / "last_evaluation.yml").read_text())
    assert summary["run_id"] == latest.info.run_id and summary["champion"] is None


def test_evaluation_compares_with_the_champion_on_the_same_split(trained, trained_template):
    champion_run = run_of(trained, trained_template.runs["A"])
    client = mlflow_client(trained)
    client.create_registered_model("cv_pipelines_detector")
    version = client.create_model_version(
        "cv_pipelines_detector", f"runs:/{champion_run.info.run_id}/weights", run_id=champion_run.info.run_id,
        tags={"training_run_id": champion_run.info.run_id},
    )
    client.set_registered_model_alias("cv_pipelines_detector", "champion", version.version)

    before = {r.info.run_id for r in runs_of(trained, "evaluation")}
    run_in_process(trained, ["evaluation"])  # of B, the latest training
    [evaluation] = [r for r in runs_of(trained, "evaluation") if r.info.run_id not in before]
    metrics = evaluation.data.metrics
    assert evaluation.data.tags["evaluated_run_id"] == trained_template.runs["B"]
    assert evaluation.data.tags["champion_version"] == "1"
    for name in ("mAP50", "mAP50-95", "precision", "recall"):
        assert metrics[f"delta/test/{name}"] == pytest.approx(metrics[f"test/{name}"] - metrics[f"champion/test/{name}"])
    per_class = pd.read_csv(trained / "data/reporting/evaluation/per_class.csv")
    assert {"champion_mAP50", "delta_mAP50"} <= set(per_class.columns)
    summary = yaml.safe_load((trained / "data/reporting/evaluation/last_evaluation.yml").read_text())
    assert summary["champion"]["run_id"] == champion_run.info.run_id


def test_evaluation_without_a_training_run_says_what_to_do(exported):
    result = kedro_cli(exported, "run", "--pipelines", "evaluation", "--env", "test")
    refused(result, "no training has run in this project yet")


# --- pieces -------------------------------------------------------------------------------


def history_of(epochs) -> dict[str, list[dict[str, float]]]:
    """``{name: [{"value", "step"}]}`` of (epoch, metrics) pairs, as MLflow shows a run's history."""
    history: dict[str, list[dict[str, float]]] = {}
    for epoch, metrics in epochs:
        for name, value in metrics.items():
            history.setdefault(name, []).append({"value": value, "step": epoch})
    return history


def test_results_csv_columns_become_mlflow_metric_names_with_epoch_steps(tmp_path):
    from cv_pipelines.models.training import metric_name, results_csv_epochs

    assert metric_name("metrics/mAP50-95(B)") == "val/mAP50-95"
    assert metric_name("  train/box_loss") == "train/box_loss"
    assert metric_name("epoch") is None
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,time,train/box_loss,metrics/mAP50(B)\n1,2.5,3.0,0.1\n2,5.0,2.0,0.3\n")
    assert history_of(results_csv_epochs(csv)) == {
        "train/elapsed_s": [{"value": 2.5, "step": 1}, {"value": 5.0, "step": 2}],
        "train/box_loss": [{"value": 3.0, "step": 1}, {"value": 2.0, "step": 2}],
        "val/mAP50": [{"value": 0.1, "step": 1}, {"value": 0.3, "step": 2}],
    }


def test_each_epoch_is_reported_as_it_ends_and_the_final_validation_is_not_an_epoch(monkeypatch):
    from types import SimpleNamespace

    from cv_pipelines.models import training

    monkeypatch.setattr(training.time, "time", lambda: 102.5)
    reported = []
    reporter = training.EpochReporter(lambda epoch, metrics: reported.append((epoch, metrics)))
    trainer = SimpleNamespace(
        epoch=0, train_time_start=100.0, tloss=3.0, lr={"lr/pg0": 0.01},
        label_loss_items=lambda loss, prefix: {f"{prefix}/box_loss": loss},
        metrics={"metrics/mAP50(B)": 0.1, "val/box_loss": 2.5},
    )
    for epoch, loss, map50 in ((0, 3.0, 0.1), (1, 2.0, 0.3)):  # what Ultralytics' trainer does per epoch
        trainer.epoch, trainer.tloss = epoch, loss
        reporter.on_train_epoch_end(trainer)
        trainer.metrics = {"metrics/mAP50(B)": map50, "val/box_loss": 2.5}  # its validate() returns a new dict
        reporter.on_fit_epoch_end(trainer)
    trainer.epoch = 2  # its final validation of best.pt: on_fit_epoch_end alone, the counter moved on
    reporter.on_fit_epoch_end(trainer)

    assert reporter.last_epoch == 2
    assert history_of(reported) == {
        "train/elapsed_s": [{"value": 2.5, "step": 1}, {"value": 2.5, "step": 2}],
        "train/box_loss": [{"value": 3.0, "step": 1}, {"value": 2.0, "step": 2}],
        "val/mAP50": [{"value": 0.1, "step": 1}, {"value": 0.3, "step": 2}],
        "val/box_loss": [{"value": 2.5, "step": 1}, {"value": 2.5, "step": 2}],
        "lr/pg0": [{"value": 0.01, "step": 1}, {"value": 0.01, "step": 2}],
    }


def test_epochs_that_were_not_validated_report_no_validation_metrics():
    """``val: false``: Ultralytics validates the last epoch only and keeps zeros in place of the others'."""
    from types import SimpleNamespace

    from cv_pipelines.models import training

    reported = []
    reporter = training.EpochReporter(lambda epoch, metrics: reported.append((epoch, metrics)))
    placeholder = {"metrics/mAP50(B)": 0, "val/box_loss": 0}  # set up before the first epoch
    trainer = SimpleNamespace(epoch=0, train_time_start=0.0, tloss=3.0, lr={}, metrics=placeholder,
                              label_loss_items=lambda loss, prefix: {f"{prefix}/box_loss": loss})
    reporter.on_train_epoch_end(trainer)
    reporter.on_fit_epoch_end(trainer)  # not validated: metrics is still the placeholder
    trainer.epoch = 1
    reporter.on_train_epoch_end(trainer)
    trainer.metrics = {"metrics/mAP50(B)": 0.4, "val/box_loss": 1.5}  # the last epoch is validated
    reporter.on_fit_epoch_end(trainer)

    assert [sorted(metrics) for _, metrics in reported] == [
        ["train/box_loss", "train/elapsed_s"],
        ["train/box_loss", "train/elapsed_s", "val/box_loss", "val/mAP50"],
    ]
    assert reported[1][1]["val/mAP50"] == 0.4


def test_training_parameters_refuse_what_the_pipeline_owns_and_bad_devices():
    from cv_pipelines.config.loader import section_parameters
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.models.training import check_device
    from cv_pipelines.pipelines.training.nodes import prepare_training

    with pytest.raises(ConfigurationError, match="is not a device"):
        # refused before the export or folders are used
        prepare_training(None, None, section_parameters("training", device="gpu0"))
    assert check_device(" CPU ") == "cpu"

    with pytest.raises(ValueError, match="extra_args may not set data, project"):
        section_parameters("training", extra_args={"data": "x.yaml", "project": "/tmp", "lr0": 0.01})
    assert section_parameters("training", extra_args={"lr0": 0.01}).extra_args == {"lr0": 0.01}


def test_a_missing_gpu_is_refused_naming_the_parameter_that_asked_for_it(project):
    import torch

    from cv_pipelines.config.loader import section_parameters
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.models.training import DeviceUnavailableError, check_device
    from cv_pipelines.pipelines.evaluation.nodes import select_models
    from cv_pipelines.pipelines.matrix.nodes import train_candidate
    from cv_pipelines.pipelines.training.nodes import prepare_training

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    no_gpu = "is '0' but this machine has no usable CUDA GPU"
    with pytest.raises(DeviceUnavailableError) as library:
        check_device("cuda:0")
    assert "device" in str(library.value) and ".device" not in str(library.value)  # the library names no key
    # Each node names the key that set the device; nothing else is touched first.
    with pytest.raises(ConfigurationError, match=f"^training.device {no_gpu}"):
        prepare_training(None, None, section_parameters("training", device="0"))
    with pytest.raises(ConfigurationError, match=f"^evaluation.device {no_gpu}"):
        select_models(None, None, None, section_parameters("evaluation", device="0"))
    training = section_parameters("training")
    gpu = section_parameters("matrix", candidates={"gpu": {"device": "0"}})
    with pytest.raises(ConfigurationError, match=f"^matrix.candidates.gpu.device {no_gpu}"):
        train_candidate("gpu", None, None, training, gpu)
    plain = section_parameters("matrix", candidates={"plain": {}})
    with pytest.raises(ConfigurationError, match=f"^training.device {no_gpu}"):
        train_candidate("plain", None, None, section_parameters("training", device="0"), plain)


def test_the_trained_model_dataset_looks_its_run_up_once_for_the_check_and_the_load(project, monkeypatch):
    from types import SimpleNamespace

    from cv_pipelines.datasets.trained_model_dataset import TrainedModelDataset
    from cv_pipelines.models import runs

    run = SimpleNamespace(info=SimpleNamespace(run_id="abc"), data=SimpleNamespace(tags={}))
    lookups = []
    monkeypatch.setattr(runs, "mlflow_client", lambda: None)
    monkeypatch.setattr(runs, "training_run", lambda client, run_id, **_: lookups.append(run_id) or run)
    (project / "best.pt").write_bytes(b"weights")
    record = project / "last_training.yml"
    record.write_text(yaml.safe_dump({"mlflow_run_id": "abc", "best_weights": "best.pt"}))
    dataset = TrainedModelDataset(record=str(record), cache_dir=str(project / "downloaded"))

    dataset.check_loadable()  # what the hooks do before the pipeline
    model = dataset.load()
    assert lookups == ["abc"]
    assert model.run_id == "abc" and model.weights == project / "best.pt"


# --- learning signal ----------------------------------------------------------------------


def test_a_small_training_really_learns(learned_template: Template):
    """learned_template's run L (LEARNED_DEMO, LEARNED_TRAINING in tests.support.projects) against
    U, one epoch of 64 px that learns nothing: L clears the deployment's default floor (0.1)."""
    root = learned_template.root  # read only
    client = mlflow_client(root)
    learned = run_of(root, learned_template.runs["L"])
    untrained = run_of(root, learned_template.runs["U"])
    losses = [m.value for m in client.get_metric_history(learned.info.run_id, "train/box_loss")]
    assert losses[-1] < 0.8 * losses[0]
    # L validates at its last epoch only (LEARNED_TRAINING's val: false): one point, at step 20.
    [validated] = client.get_metric_history(learned.info.run_id, "val/mAP50")
    assert validated.step == LEARNED_TRAINING["epochs"]
    assert validated.value > untrained.data.metrics["val/mAP50"] + 0.05
    assert learned.data.tags["evaluated_run_id"] == learned.info.run_id  # evaluated in the same run
    assert learned.data.metrics["test/mAP50"] >= 0.1


def test_the_passes_without_plots_count_and_measure_what_ultralytics_plotting_pass_does(learned_template, tmp_path,
                                                                                      monkeypatch):
    """errors_at_confidence and a champion's evaluate_weights draw nothing, yet count the same confusion matrix and
    measure the same metrics and curves as Ultralytics' own plotting pass (L, conf 0.1)."""
    import numpy as np

    from cv_pipelines.models.evaluation import _validate, errors_at_confidence, evaluate_weights

    root = use_template(learned_template, tmp_path / "project", monkeypatch)
    weights = root / run_of(root, learned_template.runs["L"]).data.tags["cv_pipelines.run_dir"] / "weights/best.pt"
    # 0.1, not the default 0.25: L scores low, and at 0.25 it may find no shape at all (tests/test_deployment.py).
    common = {"split": "test", "conf": 0.1, "iou": 0.7, "device": "cpu", "batch": 16, "project_root": root}
    data_yaml = root / "data/exports/demo_v1/dataset.yaml"
    errors = errors_at_confidence(weights, data_yaml, out_dir=tmp_path / "errors", **common)
    plotted = _validate(weights, data_yaml, "yolo", root, out_dir=tmp_path / "plotted",
                        **{k: v for k, v in common.items() if k != "project_root"})
    assert errors.confusion.sum() > 0 and np.trace(errors.confusion[:-1, :-1]) > 0  # L finds shapes at 0.1
    assert np.array_equal(errors.confusion, plotted.confusion_matrix.matrix)
    assert errors.per_image[["missed", "spurious", "correct"]].to_numpy().sum() > 0
    assert not list((tmp_path / "errors").glob("*.png")) and not list((tmp_path / "errors").glob("*.jpg"))
    assert (tmp_path / "plotted/confusion_matrix.png").is_file()

    unplotted = evaluate_weights(weights, data_yaml, out_dir=tmp_path / "champion", plots=False, **common)
    precision, recall, map50, map50_95 = (float(v) for v in plotted.mean_results())
    assert unplotted.metrics == {"mAP50": map50, "mAP50-95": map50_95, "precision": precision, "recall": recall}
    plotted_curves = plotted.box.curves_results[0][1]
    expected = {plotted.names[int(index)]: plotted_curves[row] for row, index in enumerate(plotted.ap_class_index)}
    assert unplotted.precision_curves.keys() == expected.keys()
    assert all(np.allclose(unplotted.precision_curves[name], expected[name]) for name in expected)
    assert any(curve.any() for curve in unplotted.precision_curves.values())
    assert np.array_equal(unplotted.recall_grid, plotted.box.curves_results[0][0])
    assert not list((tmp_path / "champion").glob("*.png"))


def test_training_and_evaluation_in_one_kedro_run_evaluate_the_model_just_trained(trained_template: Template):
    run = run_of(trained_template.root, trained_template.runs["B"])  # read only
    assert run.data.tags["cv_pipelines.training"] == "true"
    assert run.data.tags["cv_pipelines.evaluation"] == "true"  # one run did both
    assert run.data.tags["evaluated_run_id"] == run.info.run_id
    assert "test/mAP50" in run.data.metrics and "val/mAP50" in run.data.metrics
