"""Nodes of the ``training`` pipeline: plan the run on the export, then train.

kedro-mlflow opens exactly one MLflow run for the ``kedro run``: parameters are logged
from the ``params:`` inputs, the trained model (its record, weights and plots) through
``trained_model``. The per-epoch metrics are logged into that run while training goes
on (``models.runs.log_epoch_metrics`` from Ultralytics' epoch callbacks), so a long
training shows its curves live and a killed one keeps the epochs it did; a resumed
training first copies the epochs before its checkpoint from the run it resumes. The
export comes from the catalog (``yolo_export``), the run folder from ``training_runs``.
Ultralytics' own MLflow callback is off (``config.offline.ultralytics_settings_offline``),
so it can neither open a second run nor end this one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cv_pipelines.config.parameters import TrainingParams
from cv_pipelines.config.resolvers import in_project, project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.errors import ExportNotFoundError
from cv_pipelines.exports.versions import ExportRef, find_export
from cv_pipelines.files.run_folders import RunFolders
from cv_pipelines.models import lineage
from cv_pipelines.models.runs import (
    RunLookupError,
    TrackedModel,
    active_run,
    copy_epoch_history,
    log_epoch_metrics,
    mlflow_client,
)
from cv_pipelines.models.training import (
    DATA_FILE,
    DeviceUnavailableError,
    EpochCallback,
    check_device,
    finish_run_folder,
    interrupted_run,
    model_family,
    parameters_hash,
    read_run_record,
    results_csv_epochs,
    start_run_folder,
    train_yolo,
)
from cv_pipelines.versioning.code import code_state

logger = logging.getLogger(__name__)

RUN_DIR_TAG = "cv_pipelines.run_dir"


def prepare_training(export: ExportRef, runs: RunFolders, training: TrainingParams) -> dict[str, Any]:
    """The run folder (new, or the interrupted one to resume), the device and the lineage to record.

    Everything that can be wrong with the request is found here, before a model is
    built: a GPU that is not there, nothing to resume, an export that changed under an
    interrupted run.
    """
    root = project_root()
    try:
        device = check_device(training.device)
    except DeviceUnavailableError as exc:
        raise ConfigurationError(exc.naming("training.device")) from None
    _check_pinned_export(export, training)
    run = active_run()
    run_id = run.info.run_id if run else None
    resume = training.resume
    if resume:
        run_dir = interrupted_run(runs, resume if isinstance(resume, str) else None)
        recorded = read_run_record(run_dir)
        export = _export_of_run(root, run_dir, recorded)
        logger.info("Resuming the interrupted training %s from weights/last.pt", project_relative(run_dir, root))
    else:
        recorded = {
            "mlflow_run_id": run_id,
            "export_path": project_relative(export.path, root),
            **export.lineage(),
            "model": training.model,
            "parameters_hash": parameters_hash(training),
        }
        run_dir = start_run_folder(runs, run_id, export, recorded)
    code_commit, code_dirty = code_state(root)
    plan = {
        "run_dir": project_relative(run_dir, root),
        "resume": bool(resume),
        "device": device,
        "export_path": project_relative(export.path, root),
        "lineage": export.lineage(),
        "code_commit": code_commit,
        "code_dirty": code_dirty,
        "resumed_from_run_id": recorded.get("mlflow_run_id") if resume else None,
        "model_family": model_family(recorded.get("model", training.model)),
        "parameters_hash": recorded.get("parameters_hash"),
    }
    if run is not None:
        _log_lineage(export, plan)
    _log_plan(export, plan)
    return plan


def train_model(plan: dict[str, Any], training: TrainingParams) -> TrackedModel:
    """Train, logging each epoch's metrics into the run as it ends; the trained model (its record is the run's summary)."""
    root = project_root()
    run = active_run()
    run_id = run.info.run_id if run else None
    run_dir = root / plan["run_dir"]
    model = training.model
    if model.endswith(".pt"):  # a local checkpoint to fine-tune, relative to the project
        model = str(in_project(root, model))
    result = train_yolo(
        model=model,
        data_yaml=run_dir / DATA_FILE,
        run_dir=run_dir,
        resume=plan["resume"],
        device=plan["device"],
        project_root=root,
        on_epoch_end=_epoch_logger(run_id, plan["resumed_from_run_id"], run_dir),
        epochs=training.epochs,
        imgsz=training.imgsz,
        batch=training.batch,
        seed=training.seed,
        patience=training.patience,
        workers=training.workers,
        extra_args=training.extra_args,
    )
    summary = {
        "mlflow_run_id": run_id,
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
    finish_run_folder(run_dir, summary)  # last: a run folder with a summary is never resumed
    logger.info(
        "Training done in %.0f s, %d epoch(s): val mAP50 %.3f, mAP50-95 %.3f; weights in %s",
        result.seconds,
        result.epochs_done,
        result.final_metrics.get("val/mAP50", float("nan")),
        result.final_metrics.get("val/mAP50-95", float("nan")),
        summary["best_weights"],
    )
    trained = TrackedModel(
        run_id=summary["mlflow_run_id"] or "",
        weights=result.best,
        family=plan["model_family"],
        lineage=dict(plan["lineage"]),
        summary=summary,
    )
    return trained


# --- helpers ------------------------------------------------------------------------------


def _epoch_logger(run_id: str | None, resumed_from_run_id: str | None, run_dir: Path) -> EpochCallback | None:
    """Log each epoch into run ``run_id`` as it ends; a resumed training first logs the epochs before its checkpoint.

    None when tracking is off for this pipeline (no run to log into).
    """
    if run_id is None:
        return None
    client = mlflow_client()
    earlier_run_id = resumed_from_run_id

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal earlier_run_id
        if earlier_run_id is not None:
            # The first epoch a resumed training reports is the one after its checkpoint;
            # with the epochs before it, this run shows the whole curve, each epoch once.
            _log_earlier_epochs(client, earlier_run_id, run_id, epoch, run_dir)
            earlier_run_id = None
        log_epoch_metrics(client, run_id, epoch, metrics)

    return log_epoch


def _log_earlier_epochs(client, earlier_run_id: str, run_id: str, resumed_at: int, run_dir: Path) -> None:
    """Epochs 1 to ``resumed_at - 1`` into run ``run_id``: as the earlier run logged them, else from ``results.csv``."""
    try:
        copied = copy_epoch_history(client, earlier_run_id, run_id, before_epoch=resumed_at)
    except RunLookupError as exc:
        logger.warning("The epochs before the resume come from results.csv: %s", exc)
        copied = set()
    # Ultralytics saves last.pt just before it reports the epoch, so a run killed in
    # between never logged the last epoch it checkpointed (nor does a run missing from
    # this store give any): results.csv, written before last.pt, is the one record left.
    # A row repeats an epoch that a kill cut short after its row was written: the last
    # row is the one the checkpoint goes on from.
    from_csv = dict(results_csv_epochs(run_dir / "results.csv"))
    for epoch in sorted(set(from_csv) - copied):
        if epoch < resumed_at:
            log_epoch_metrics(client, run_id, epoch, from_csv[epoch])
    logger.info("Logged epochs 1 to %d of the training resumed from run %s", resumed_at - 1, earlier_run_id)


def _check_pinned_export(export: ExportRef, training: TrainingParams) -> None:
    pinned = training.export_version
    if pinned is not None and int(pinned) != export.version:
        raise ConfigurationError(
            f"training.export_version is {pinned} but the catalog's yolo_export loaded version {export.version}; "
            "pin it on the command line (`--params training.export_version=N`), which sets both"
        )


def _log_lineage(export: ExportRef, plan: dict[str, Any]) -> None:
    tags = {
        lineage.TRAINING_TAG: "true",
        RUN_DIR_TAG: plan["run_dir"],
        "code_commit": plan["code_commit"] or "",
        "code_dirty": str(plan["code_dirty"]).lower(),
        lineage.FAMILY_TAG: plan["model_family"],
        **lineage.compute_tags(),
    }
    if plan["code_commit"]:
        tags["mlflow.source.git.commit"] = plan["code_commit"]
    if plan["resumed_from_run_id"]:
        tags["resumed_from_run_id"] = plan["resumed_from_run_id"]
    lineage.log_export_input(export, "training", tags)


def _log_plan(export: ExportRef, plan: dict[str, Any]) -> None:
    counts = export.info.get("counts", {}).get("images", {})
    logger.info(
        "Training on export %s (train %s, val %s, test %s images; content %s) on %s into %s",
        export.name,
        counts.get("train"),
        counts.get("val"),
        counts.get("test"),
        export.lineage()["export_content_hash"][:12],
        plan["device"],
        plan["run_dir"],
    )


def _export_of_run(root: Path, run_dir: Path, recorded: dict[str, Any]) -> ExportRef:
    """The export an interrupted run was training on, unchanged since."""
    path = root / recorded["export_path"]
    try:
        export = find_export(path.parent, recorded["label_set"], int(recorded["export_version"]))
    except ExportNotFoundError as exc:
        raise ConfigurationError(
            f"cannot resume {run_dir.name}: {exc}; start a new training (training.resume: false)"
        ) from None
    if export.lineage()["export_content_hash"] != recorded["export_content_hash"]:
        raise ConfigurationError(
            f"cannot resume {run_dir.name}: export {export.name} no longer holds the content it was training on; "
            "start a new training (training.resume: false)"
        )
    return export
