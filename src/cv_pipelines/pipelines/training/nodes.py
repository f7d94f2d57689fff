"""Nodes of the ``training`` pipeline: resolve the export and device, then train.

kedro-mlflow opens exactly one MLflow run for the ``kedro run``: parameters are logged
from the ``params:`` inputs, the per-epoch metrics and the summary through catalog
datasets. What the catalog cannot express is done here on that same active run: the
export as an MLflow dataset input, lineage tags, and the run folder's files (weights,
results table, plots) as artifacts. Ultralytics' own MLflow callback is off
(``offline.ultralytics_settings_offline``), so it can neither open a second run nor
end this one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from cv_pipelines.config.resolvers import in_project, project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.versions import ExportRef, find_export, write_data_yaml
from cv_pipelines.models.lineage import FAMILY_TAG, TRAINING_TAG, log_export_input
from cv_pipelines.models.training import (
    DATA_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    check_device,
    interrupted_run,
    metrics_history,
    model_family,
    new_run_dir,
    parameters_hash,
    train_yolo,
)

logger = logging.getLogger(__name__)

RUN_DIR_TAG = "cv_pipelines.run_dir"


def prepare_training(training: dict[str, Any], export: dict[str, Any]) -> dict[str, Any]:
    """Pick the export (or the run to resume) and the device; record the lineage.

    Everything that can be wrong with the request is found here, before a model is
    built: a missing export, a GPU that is not there, nothing to resume.
    """
    root = project_root()
    device = check_device(training["device"])
    training_dir = in_project(root, training["output_dir"])
    run = _active_run()
    run_id = run.info.run_id if run else None
    resume = training["resume"]
    if resume:
        run_dir = interrupted_run(training_dir, resume if isinstance(resume, str) else None)
        recorded = yaml.safe_load((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        export_ref = _export_of_run(root, run_dir, recorded)
        logger.info("Resuming the interrupted training %s from weights/last.pt", project_relative(run_dir, root))
    else:
        export_ref = find_export(
            in_project(root, export["output_dir"]), export["label_set"], training["export_version"]
        )
        run_dir = new_run_dir(training_dir, run_id)
        recorded = {
            "mlflow_run_id": run_id,
            "export_path": project_relative(export_ref.path, root),
            **export_ref.lineage(),
            "model": training["model"],
            "parameters_hash": parameters_hash(training),
        }
        (run_dir / RUN_FILE).write_text(yaml.safe_dump(recorded, sort_keys=False), encoding="utf-8")
        write_data_yaml(export_ref, run_dir / DATA_FILE)
    code_commit, code_dirty = _code_state(root)
    plan = {
        "run_dir": project_relative(run_dir, root),
        "resume": bool(resume),
        "device": device,
        "export_path": project_relative(export_ref.path, root),
        "lineage": export_ref.lineage(),
        "code_commit": code_commit,
        "code_dirty": code_dirty,
        "resumed_from_run_id": recorded.get("mlflow_run_id") if resume else None,
        "model_family": model_family(recorded.get("model", training["model"])),
        "parameters_hash": recorded.get("parameters_hash"),
    }
    if run is not None:
        _log_lineage(export_ref, plan)
    counts = export_ref.info.get("counts", {}).get("images", {})
    logger.info(
        "Training on export %s (train %s, val %s, test %s images; content %s) on %s into %s",
        export_ref.name,
        counts.get("train"),
        counts.get("val"),
        counts.get("test"),
        export_ref.lineage()["export_content_hash"][:12],
        device,
        plan["run_dir"],
    )
    return plan


def train_model(plan: dict[str, Any], training: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, then return the per-epoch metric history and the run's summary."""
    root = project_root()
    run_dir = root / plan["run_dir"]
    model = training["model"]
    if model.endswith(".pt"):  # a local checkpoint to fine-tune, relative to the project
        model = str(in_project(root, model))
    result = train_yolo(
        model=model,
        data_yaml=run_dir / DATA_FILE,
        run_dir=run_dir,
        epochs=training["epochs"],
        imgsz=training["imgsz"],
        batch=training["batch"],
        device=plan["device"],
        seed=training["seed"],
        patience=training["patience"],
        workers=training["workers"],
        extra_args=training["extra_args"],
        resume=plan["resume"],
        project_root=root,
    )
    history = metrics_history(run_dir / "results.csv")
    run = _active_run()
    summary = {
        "mlflow_run_id": run.info.run_id if run else None,
        "run_dir": plan["run_dir"],
        "best_weights": project_relative(result.best, root),
        "last_weights": project_relative(result.last, root),
        "epochs_done": result.epochs_done,
        "seconds": round(result.seconds, 1),
        "device": plan["device"],
        "model_family": plan["model_family"],
        "resumed_from_run_id": plan["resumed_from_run_id"],
        "export_path": plan["export_path"],
        **plan["lineage"],
        "code_commit": plan["code_commit"],
        "parameters_hash": plan["parameters_hash"],
        "final_metrics": {name: round(value, 5) for name, value in sorted(result.final_metrics.items())},
    }
    # Written last: a run folder with a summary is a finished training, never resumed.
    (run_dir / SUMMARY_FILE).write_text(yaml.safe_dump(summary, sort_keys=False), encoding="utf-8")
    if run is not None:
        import mlflow  # heavy import kept local

        # Weights, results table, confusion matrix, curves, the args Ultralytics used.
        mlflow.log_artifacts(str(run_dir))
    logger.info(
        "Training done in %.0f s, %d epoch(s): val mAP50 %.3f, mAP50-95 %.3f; weights in %s",
        result.seconds,
        result.epochs_done,
        result.final_metrics.get("val/mAP50", float("nan")),
        result.final_metrics.get("val/mAP50-95", float("nan")),
        summary["best_weights"],
    )
    return history, summary


# --- helpers ------------------------------------------------------------------------------


def _active_run():
    import mlflow  # heavy import kept local

    return mlflow.active_run()


def _log_lineage(export_ref: ExportRef, plan: dict[str, Any]) -> None:
    tags = {
        TRAINING_TAG: "true",
        RUN_DIR_TAG: plan["run_dir"],
        "code_commit": plan["code_commit"] or "",
        "code_dirty": str(plan["code_dirty"]).lower(),
        FAMILY_TAG: plan["model_family"],
    }
    if plan["code_commit"]:
        tags["mlflow.source.git.commit"] = plan["code_commit"]
    if plan["resumed_from_run_id"]:
        tags["resumed_from_run_id"] = plan["resumed_from_run_id"]
    log_export_input(export_ref, "training", tags)


def _export_of_run(root: Path, run_dir: Path, recorded: dict[str, Any]) -> ExportRef:
    """The export an interrupted run was training on, unchanged since."""
    path = root / recorded["export_path"]
    export_ref = find_export(path.parent, recorded["label_set"], int(recorded["export_version"]))
    if export_ref.lineage()["export_content_hash"] != recorded["export_content_hash"]:
        raise ConfigurationError(
            f"cannot resume {run_dir.name}: export {export_ref.name} no longer holds the content it was training on; "
            "start a new training (training.resume: false)"
        )
    return export_ref


def _code_state(root: Path) -> tuple[str | None, bool]:
    import subprocess

    from cv_pipelines.versioning.dataset_versions import current_commit

    commit = current_commit(root, "HEAD")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
    )
    return commit, bool(status.stdout.strip()) if status.returncode == 0 else False
