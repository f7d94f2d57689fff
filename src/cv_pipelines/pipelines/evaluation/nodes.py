"""Nodes of the ``evaluation`` pipeline: pick the model (and the champion), evaluate, report.

The model is a training run's ``weights/best.pt`` taken from MLflow, so evaluation
works the same against the embedded store and a tracking server. Which run: the one
``training_summary`` names (the project's latest training; inside ``kedro run
--pipelines training,evaluation`` the training that just ran, since Kedro orders the
nodes by that dataset), or ``evaluation.run_id``. It is evaluated on
the frozen split of the export that run trained on; the export's content hash is
checked against the one the run recorded. The champion (the model registry's
``@champion`` alias of ``deployment.model_name``, when there is one) is evaluated on
the same split in the same run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from cv_pipelines.config.resolvers import in_project, project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.versions import ExportRef, find_export, write_data_yaml
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
from cv_pipelines.models.lineage import (
    EVALUATION_TAG,
    FAMILY_TAG,
    TRAINING_TAG,
    download_weights,
    log_export_input,
)
from cv_pipelines.models.training import (
    DATA_FILE,
    check_device,
)

logger = logging.getLogger(__name__)

#: Model version tag (set by the deployment pipeline) naming the training run of its weights.
TRAINING_RUN_TAG = "training_run_id"


def select_models(
    training_summary: dict[str, Any], evaluation: dict[str, Any], export: dict[str, Any], deployment: dict[str, Any]
) -> dict[str, Any]:
    """The training run to evaluate, its export, and the champion to compare with."""
    import mlflow  # heavy import kept local
    from mlflow import MlflowClient

    root = project_root()
    device = check_device(evaluation["device"])
    client = MlflowClient()
    active = mlflow.active_run()
    if active is None:
        raise ConfigurationError(
            "the evaluation pipeline needs MLflow tracking (it reads the trained model from a training run); "
            "remove 'evaluation' from tracking.disable_tracking.pipelines in conf/base/mlflow.yml"
        )
    training_run = _training_run(client, evaluation["run_id"] or training_summary.get("mlflow_run_id"), active)
    tags = training_run.data.tags
    export_ref = find_export(
        in_project(root, export["output_dir"]), tags["data.label_set"], int(tags["data.export_version"])
    )
    if export_ref.lineage()["export_content_hash"] != tags.get("data.export_content_hash"):
        raise ConfigurationError(
            f"export {export_ref.name} no longer holds the data training run {training_run.info.run_id} was trained "
            "on (content hash differs), so its test split is not the frozen one; evaluate a newer run"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = in_project(root, evaluation["output_dir"]) / f"{stamp}_{active.info.run_id[:12]}"
    (out_dir / "models").mkdir(parents=True)
    data_yaml = write_data_yaml(export_ref, out_dir / DATA_FILE)
    weights = download_weights(training_run.info.run_id, out_dir / "models/evaluated")
    champion = _champion(client, deployment["model_name"])
    plan: dict[str, Any] = {
        "out_dir": project_relative(out_dir, root),
        "data_yaml": project_relative(data_yaml, root),
        "device": device,
        "run_id": training_run.info.run_id,
        "weights": project_relative(weights, root),
        "family": tags.get(FAMILY_TAG, "yolo"),
        "export": export_ref.name,
        "lineage": export_ref.lineage(),
        "champion": None,
    }
    if champion is not None:
        version, champion_run_id = champion
        if champion_run_id == training_run.info.run_id:
            logger.info("The evaluated model is the champion itself (version %s); no comparison", version.version)
        else:
            champion_weights = download_weights(champion_run_id, out_dir / "models/champion")
            plan["champion"] = {
                "model_name": deployment["model_name"],
                "version": str(version.version),
                "run_id": champion_run_id,
                "weights": project_relative(champion_weights, root),
                "family": client.get_run(champion_run_id).data.tags.get(FAMILY_TAG, "yolo"),
            }
    _log_lineage(export_ref, plan)
    logger.info(
        "Evaluating training run %s on the %s split of %s%s",
        plan["run_id"],
        evaluation["split"],
        export_ref.name,
        f" against champion version {plan['champion']['version']}" if plan["champion"] else " (no champion yet)",
    )
    return plan


def evaluate_models(plan: dict[str, Any], evaluation: dict[str, Any]):
    """Metrics, per-class table, plots and worst images of the model (and the champion)."""
    root = project_root()
    split = evaluation["split"]
    out_dir = root / plan["out_dir"]
    common = {
        "split": split,
        "iou": evaluation["iou"],
        "device": plan["device"],
        "batch": evaluation["batch"],
        "project_root": root,
    }
    data_yaml = root / plan["data_yaml"]
    result = evaluate_weights(
        root / plan["weights"],
        data_yaml,
        conf=evaluation["conf"],
        out_dir=out_dir / "ultralytics",
        family=plan["family"],
        **common,
    )
    errors = errors_at_confidence(
        root / plan["weights"],
        data_yaml,
        conf=evaluation["worst_conf"],
        out_dir=out_dir / "ultralytics_at_conf",
        family=plan["family"],
        **common,
    )
    worst = errors.per_image[errors.per_image["errors"] > 0].head(evaluation["worst_images"]).reset_index(drop=True)

    metrics = {f"{split}/{name}": value for name, value in result.metrics.items()}
    for row in result.per_class.itertuples(index=False):
        if row.instances:
            metrics[f"{split}/AP50/{row[0]}"] = float(row.mAP50)
    per_class = result.per_class
    champion_result = None
    differences: dict[str, float] = {}
    if plan["champion"]:
        champion_result = evaluate_weights(
            root / plan["champion"]["weights"],
            data_yaml,
            conf=evaluation["conf"],
            out_dir=out_dir / "ultralytics_champion",
            family=plan["champion"]["family"],
            **common,
        )
        differences, comparison = compare(result, champion_result)
        per_class = per_class.merge(comparison.drop(columns=["mAP50", "mAP50-95"]), on="class", how="left")
        metrics |= {f"champion/{split}/{name}": value for name, value in champion_result.metrics.items()}
        metrics |= {f"delta/{split}/{name}": value for name, value in differences.items()}

    title = f"{plan['export']} {split} split, run {plan['run_id'][:8]}"
    summary = {
        "run_id": plan["run_id"],
        "split": split,
        "export": plan["export"],
        **plan["lineage"],
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
    _log_outcome(result.metrics, champion_result, differences, plan, split, worst)
    history = {name: [{"value": float(value), "step": 0}] for name, value in metrics.items()}
    return (
        history,
        per_class,
        worst,
        confusion_figure(errors, result.classes, f"Confusion matrix, {title}"),
        pr_figure(result, f"Precision-recall, {title}", champion_result),
        per_class_figure(per_class, f"AP50 per class, {title}"),
        summary,
    )


# --- helpers ------------------------------------------------------------------------------


def _training_run(client, run_id: str | None, active):
    from mlflow.exceptions import MlflowException

    if not run_id:
        raise ConfigurationError(
            "the latest training (data/reporting/training/last_training.yml) has no MLflow run id, it ran with "
            "tracking off; set evaluation.run_id to a training run"
        )
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigurationError(
            f"training run {run_id!r} is not in this MLflow store; see `mlflow ui` for the run ids and set "
            "evaluation.run_id, or run `kedro run --pipelines training`"
        ) from None
    if run.data.tags.get(TRAINING_TAG) != "true":
        raise ConfigurationError(f"run {run_id!r} is not a training run (it has no {TRAINING_TAG} tag)")
    if run.info.status != "FINISHED" and run_id != active.info.run_id:
        raise ConfigurationError(
            f"training run {run_id!r} is {run.info.status}, not finished; resume it with "
            "`kedro run --pipelines training --params training.resume=true`, or evaluate another run"
        )
    return run


def _champion(client, model_name: str):
    """(model version, training run id) of ``@champion``, or None while there is none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:  # no such registered model, or no champion alias yet
        return None
    return version, version.tags.get(TRAINING_RUN_TAG) or version.run_id


def _log_lineage(export_ref: ExportRef, plan: dict[str, Any]) -> None:
    tags = {EVALUATION_TAG: "true", "evaluated_run_id": plan["run_id"]}
    if plan["champion"]:
        tags |= {"champion_version": plan["champion"]["version"], "champion_run_id": plan["champion"]["run_id"]}
    log_export_input(export_ref, "evaluation", tags)


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
