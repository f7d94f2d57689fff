"""Nodes of the ``evaluation`` pipeline: pick the export and the champion, evaluate, report.

The model comes from the catalog (``trained_model``: the training of the same ``kedro
run``, ``evaluation.run_id``, or the project's latest training) with its weights on
disk, as does the registry's ``@champion`` (``champion_model``, None while there is
none). The model is evaluated on the frozen split of the export it trained on, whose
files are re-hashed and checked against the content hash the run recorded; the
champion on the same split, in the same run.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from cv_pipelines.config.parameters import EvaluationParams
from cv_pipelines.config.resolvers import in_project, project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.errors import ExportNotFoundError
from cv_pipelines.exports.versions import ExportRef, find_export, write_data_yaml
from cv_pipelines.exports.writing import content_hash_on_disk
from cv_pipelines.files.run_folders import RunFolders
from cv_pipelines.models.evaluation import (
    HEADLINE,
    compare,
    confusion_figure,
    errors_at_confidence,
    evaluate_weights,
    per_class_figure,
    pr_figure,
    rounded,
)
from cv_pipelines.models.lineage import EVALUATION_TAG, log_export_input
from cv_pipelines.models.runs import TrackedModel, active_run
from cv_pipelines.models.training import DATA_FILE, DeviceUnavailableError, check_device

logger = logging.getLogger(__name__)


def select_models(
    trained: TrackedModel, champion: TrackedModel | None, runs: RunFolders, evaluation: EvaluationParams
) -> dict[str, Any]:
    """The plan: the model, the export split it is measured on, and the champion to compare with."""
    root = project_root()
    try:
        device = check_device(evaluation.device)
    except DeviceUnavailableError as exc:
        raise ConfigurationError(exc.naming("evaluation.device")) from None
    active = active_run()
    if active is None:
        raise ConfigurationError(
            "the evaluation pipeline needs MLflow tracking (it reads the trained model from a training run); "
            "remove 'evaluation' from tracking.disable_tracking.pipelines in conf/base/mlflow.yml"
        )
    export = _export_of(trained, root)
    out_dir = runs.new(active.info.run_id)
    plan: dict[str, Any] = {
        "out_dir": project_relative(out_dir, root),
        "data_yaml": project_relative(write_data_yaml(export, out_dir / DATA_FILE), root),
        "device": device,
        "run_id": trained.run_id,
        "weights": project_relative(trained.weights, root),
        "family": trained.family,
        "export": export.name,
        "export_path": project_relative(export.path, root),
        "lineage": export.lineage(),
        "champion": _champion_plan(champion, trained, root),
    }
    _log_lineage(export, plan)
    logger.info(
        "Evaluating training run %s on the %s split of %s%s",
        plan["run_id"],
        evaluation.split,
        export.name,
        f" against champion version {plan['champion']['version']}" if plan["champion"] else " (no champion yet)",
    )
    return plan


def evaluate_models(plan: dict[str, Any], evaluation: EvaluationParams) -> tuple[Any, ...]:
    """Metrics, per-class table, plots and worst images of the model (and the champion); the evaluated model."""
    root = project_root()
    split = evaluation.split
    result, errors, champion_result = _measure(plan, evaluation, root)
    worst = errors.per_image[errors.per_image["errors"] > 0].head(evaluation.worst_images).reset_index(drop=True)
    metrics = {f"{split}/{name}": value for name, value in result.metrics.items()}
    for row in result.per_class.itertuples(index=False):
        if row.instances:
            metrics[f"{split}/AP50/{row[0]}"] = float(row.mAP50)
    per_class = result.per_class
    differences: dict[str, float] = {}
    if champion_result is not None:
        differences, comparison = compare(result, champion_result)
        per_class = per_class.merge(comparison.drop(columns=["mAP50", "mAP50-95"]), on="class", how="left")
        metrics |= {f"champion/{split}/{name}": value for name, value in champion_result.metrics.items()}
        metrics |= {f"delta/{split}/{name}": value for name, value in differences.items()}
    summary = _summary(plan, split, result, champion_result, differences, worst)
    # The mAP pass's thresholds: the deployment's parity gate measures the packaged model at the same.
    summary["thresholds"] = {"conf": evaluation.conf, "iou": evaluation.iou}
    _log_outcome(result.metrics, champion_result, differences, plan, split, worst)
    title = f"{plan['export']} {split} split, run {plan['run_id'][:8]}"
    evaluated = TrackedModel(
        run_id=plan["run_id"],
        weights=root / plan["weights"],
        family=plan["family"],
        lineage=dict(plan["lineage"]),
        summary=summary,
    )
    return (
        {name: [{"value": float(value), "step": 0}] for name, value in metrics.items()},
        per_class,
        worst,
        confusion_figure(errors, result.classes, f"Confusion matrix, {title}"),
        pr_figure(result, f"Precision-recall, {title}", champion_result),
        per_class_figure(per_class, f"AP50 per class, {title}"),
        evaluated,
    )


def _measure(plan: dict[str, Any], evaluation: EvaluationParams, root) -> tuple[Any, Any, Any]:
    """Ultralytics' validation of the model (for mAP, and at ``worst_conf`` for errors) and of the champion."""
    out_dir = root / plan["out_dir"]
    data_yaml = root / plan["data_yaml"]
    common = {
        "split": evaluation.split,
        "iou": evaluation.iou,
        "device": plan["device"],
        "batch": evaluation.batch,
        "project_root": root,
    }
    weights, family = root / plan["weights"], plan["family"]
    result = evaluate_weights(
        weights, data_yaml, conf=evaluation.conf, out_dir=out_dir / "ultralytics", family=family, **common
    )
    errors = errors_at_confidence(
        weights,
        data_yaml,
        conf=evaluation.worst_conf,
        out_dir=out_dir / "ultralytics_at_conf",
        family=family,
        **common,
    )
    champion = plan["champion"]
    champion_result = None
    if champion:
        champion_result = evaluate_weights(
            root / champion["weights"],
            data_yaml,
            conf=evaluation.conf,
            out_dir=out_dir / "ultralytics_champion",
            family=champion["family"],
            plots=False,  # its curves are drawn beside the model's in pr_curve.png
            **common,
        )
    return result, errors, champion_result


def _summary(plan, split: str, result, champion_result, differences: dict[str, float], worst) -> dict[str, Any]:
    """The verdict the deployment gates on: metrics, the champion compared with, the differences."""
    return {
        "run_id": plan["run_id"],
        "split": split,
        "export": plan["export"],
        "export_path": plan["export_path"],
        **plan["lineage"],
        "weights": plan["weights"],
        "family": plan["family"],
        "metrics": rounded(result.metrics),
        "per_class_mAP50": {
            row["class"]: (None if pd.isna(row["mAP50"]) else round(float(row["mAP50"]), 5))
            for row in result.per_class.to_dict("records")
        },
        "champion": (
            {**plan["champion"], "metrics": rounded(champion_result.metrics), "differences": rounded(differences)}
            if champion_result is not None
            else None
        ),
        "worst_images": worst["image_id"].tolist(),
        "output_dir": plan["out_dir"],
    }


# --- helpers ------------------------------------------------------------------------------


def _export_of(trained: TrackedModel, root) -> ExportRef:
    """The export the run trained on, its files re-hashed to check they hold the same content still."""
    lineage = trained.lineage
    path = lineage.get("export_path") or trained.summary.get("export_path")
    if not path:
        raise ConfigurationError(
            f"training run {trained.run_id} recorded no export path (data.export_path); evaluate a run trained by "
            "this version of the project"
        )
    try:
        export = find_export(in_project(root, path).parent, lineage["label_set"], int(lineage["export_version"]))
    except ExportNotFoundError as exc:
        raise ConfigurationError(
            f"the export training run {trained.run_id} was trained on is gone: {exc}; evaluate a newer run"
        ) from None
    recorded = lineage.get("export_content_hash") or ""
    if export.lineage()["export_content_hash"] != recorded:
        raise ConfigurationError(
            f"export {export.name} no longer holds the data training run {trained.run_id} was trained "
            "on (content hash differs), so its test split is not the frozen one; evaluate a newer run"
        )
    # export_info.yaml only says what was written; an edited label or a removed image shows in the files.
    on_disk = content_hash_on_disk(export.path, fmt=export.info.get("format", "yolo"))
    if on_disk != recorded:
        raise ConfigurationError(
            f"export {export.name} no longer holds the data training run {trained.run_id} was trained on: "
            f"its files were changed after it was written (they hash to {on_disk[:12]}, the run recorded "
            f"{recorded[:12]}), so its test split is not the frozen one; restore the export's files, or "
            "evaluate a run trained on another export"
        )
    return export


def _champion_plan(champion: TrackedModel | None, trained: TrackedModel, root) -> dict[str, Any] | None:
    if champion is None:
        return None
    if champion.run_id == trained.run_id:
        logger.info("The evaluated model is the champion itself (version %s); no comparison", champion.version)
        return None
    return {
        "version": champion.version,
        "run_id": champion.run_id,
        "weights": project_relative(champion.weights, root),
        "family": champion.family,
    }


def _log_lineage(export: ExportRef, plan: dict[str, Any]) -> None:
    tags = {EVALUATION_TAG: "true", "evaluated_run_id": plan["run_id"]}
    if plan["champion"]:
        tags |= {"champion_version": plan["champion"]["version"], "champion_run_id": plan["champion"]["run_id"]}
    log_export_input(export, "evaluation", tags)


def _log_outcome(metrics, champion, differences, plan, split, worst) -> None:
    line = ", ".join(f"{name} {metrics[name]:.3f}" for name in HEADLINE)
    logger.info("Evaluation of run %s on %s: %s", plan["run_id"][:12], split, line)
    if champion is not None:
        logger.info(
            "Against champion version %s: %s",
            plan["champion"]["version"],
            ", ".join(f"{name} {differences[name]:+.3f}" for name in HEADLINE),
        )
    if len(worst):
        logger.info(
            "Worst images (missed + spurious boxes): %s",
            ", ".join(
                f"{row.image_id[:12]} ({row.missed} missed, {row.spurious} spurious)"
                for row in worst.head(5).itertuples()
            ),
        )
