"""Nodes of the ``deployment`` pipeline: package, register, gate; or roll back.

The model deployed is the one the latest evaluation measured (``evaluation_summary``,
so ``kedro run --pipelines training,evaluation,deployment`` deploys what it just
trained). Its ``weights/best.pt`` comes from its training run in MLflow, is exported to
ONNX, and both travel as artifacts of an ``mlflow.pyfunc`` model logged into this
run (``cv_pipelines.models.packaged_model``) and registered under ``deployment.model_name``.
The new version becomes ``challenger``; the quality gate promotes it to ``champion``
only on the evaluation's comparison with the current champion on the same test split.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from cv_pipelines.config.resolvers import in_project, project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.models import packaging as model_packaging
from cv_pipelines.models import registry as model_registry
from cv_pipelines.models.lineage import EVALUATION_TAG, FAMILY_TAG, download_weights

logger = logging.getLogger(__name__)

DEPLOYMENT_TAG = "cv_pipelines.deployment"
LINEAGE_KEYS = (
    "export_name",
    "export_version",
    "export_content_hash",
    "label_set",
    "dataset_version",
    "dataset_commit",
    "registries_hash",
)


def deploy_model(
    evaluation_summary: dict[str, Any], deployment: dict[str, Any], export: dict[str, Any]
) -> dict[str, Any]:
    """Register the evaluated model and gate it (``action: deploy``), or roll back (``action: rollback``)."""
    import mlflow  # heavy import kept local
    from mlflow import MlflowClient

    from cv_pipelines.config.parameters import DeploymentParams

    # Normalised (metric names such as map50 -> mAP50) and checked, also when called directly.
    deployment = DeploymentParams.model_validate(deployment).model_dump()
    client = MlflowClient()
    name = deployment["model_name"]
    if deployment["action"] == "rollback":
        return _rollback(client, name)

    active = mlflow.active_run()
    if active is None:
        raise ConfigurationError(
            "the deployment pipeline needs MLflow tracking (it logs the packaged model into its run); remove "
            "'deployment' from tracking.disable_tracking.pipelines in conf/base/mlflow.yml"
        )
    training_run_id = (evaluation_summary or {}).get("run_id")
    if not training_run_id:
        raise ConfigurationError(
            "data/reporting/evaluation/last_evaluation.yml names no evaluated run; run "
            "`kedro run --pipelines evaluation` before the deployment"
        )
    mlflow.set_tags({DEPLOYMENT_TAG: "true", "deployed_run_id": training_run_id})
    existing = model_registry.version_of_training_run(client, name, training_run_id)
    if existing is not None:
        aliases = ", ".join(existing.aliases) or "no alias"
        logger.info(
            "Skipped: training run %s is already registered as %s version %s (%s); nothing registered",
            training_run_id,
            name,
            existing.version,
            aliases,
        )
        return {
            "action": "skipped",
            "model_name": name,
            "version": str(existing.version),
            "training_run_id": training_run_id,
            "aliases": sorted(existing.aliases),
            "reason": f"training run {training_run_id} is already registered as version {existing.version}",
        }

    training_run = _training_run(client, training_run_id)
    family = training_run.data.tags.get(FAMILY_TAG, "yolo")
    if family not in model_packaging.FAMILIES:
        raise ConfigurationError(
            f"training run {training_run_id} trained a model of family {family!r}, and only Ultralytics "
            f"{' and '.join(model_packaging.FAMILIES)} models can be packaged; deploy a run of one of those"
        )
    evaluation_run_id = _evaluation_run_id(
        client, training_run_id, [training_run.info.experiment_id, active.info.experiment_id]
    )
    root = project_root()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work_dir = in_project(root, deployment["output_dir"]) / f"{stamp}_{active.info.run_id[:12]}"
    weights = download_weights(training_run_id, work_dir)

    info = model_packaging.checkpoint_info(weights, family)
    onnx = model_packaging.export_onnx(weights, info["imgsz"], root, family)
    config = {
        "use_onnx": deployment["use_onnx"],
        "family": family,
        "names": info["names"],
        "imgsz": info["imgsz"],
        **{key: deployment[key] for key in ("conf", "iou", "max_det", "max_image_bytes", "max_image_pixels")},
    }
    # One test image of the export (the input example MLflow stores and validates with).
    export_dir = in_project(root, export["output_dir"]) / str(evaluation_summary.get("export", ""))
    model_info = model_packaging.log_packaged_model(
        weights=weights,
        onnx=onnx,
        config=config,
        example=model_packaging.example_image(export_dir if export_dir.is_dir() else None, info["imgsz"]),
    )

    split = evaluation_summary.get("split", "test")
    tags = {
        model_registry.TRAINING_RUN_TAG: training_run_id,
        "evaluation_run_id": evaluation_run_id or "",
        "deployment_run_id": active.info.run_id,
        "code_commit": training_run.data.tags.get("code_commit", ""),
        "code_dirty": training_run.data.tags.get("code_dirty", ""),
        **{
            f"data.{key}": str(evaluation_summary.get(key) or training_run.data.tags.get(f"data.{key}", ""))
            for key in LINEAGE_KEYS
        },
        **{f"{split}/{metric}": str(value) for metric, value in (evaluation_summary.get("metrics") or {}).items()},
        "evaluated_split": split,
        "model_family": family,
        "use_onnx": str(deployment["use_onnx"]).lower(),
        "imgsz": str(info["imgsz"]),
    }
    model_registry.ensure_registered_model(client, name)
    version = str(mlflow.register_model(model_info.model_uri, name, tags=tags).version)
    model_registry.make_challenger(client, name, version)

    champion = model_registry.alias_version(client, name, model_registry.CHAMPION)
    promoted, reason = gate_decision(evaluation_summary, champion, deployment)
    client.set_model_version_tag(name, version, "gate", "promoted" if promoted else "held")
    client.set_model_version_tag(name, version, "gate_reason", reason)
    previous = model_registry.promote(client, name, version, reason) if promoted else None
    mlflow.set_tags({"registered_model": name, "model_version": version, "gate": "promoted" if promoted else "held"})
    if promoted:
        logger.info("Registered %s version %s and promoted it to champion: %s", name, version, reason)
    else:
        logger.warning("Registered %s version %s; it stays challenger: %s", name, version, reason)
    return {
        "action": "promoted" if promoted else "held",
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "aliases": ["champion"] if promoted else ["challenger"],
        "previous_champion": previous,
        "reason": reason,
        "training_run_id": training_run_id,
        "evaluation_run_id": evaluation_run_id,
        "split": split,
        "metrics": evaluation_summary.get("metrics"),
        "use_onnx": deployment["use_onnx"],
        "onnx": project_relative(onnx, root),
    }


def gate_decision(summary: dict[str, Any], champion, deployment: dict[str, Any]) -> tuple[bool, str]:
    """Whether the evaluated model may become champion, and one sentence saying why (not).

    The floor (``champion_floor``) holds for every model; a current champion must also
    have been measured in the same evaluation (the summary's ``champion`` is that
    version), and none of ``gate_metrics`` may be more than ``tolerance`` below it.
    """
    split = summary.get("split")
    metrics = summary.get("metrics") or {}
    below = [
        f"{metric} {metrics.get(metric, float('nan')):.4f} < {floor:g}"
        for metric, floor in deployment["champion_floor"].items()
        if not metrics.get(metric, float("-inf")) >= floor
    ]
    if below:
        return False, f"its {split} metrics are below deployment.champion_floor ({'; '.join(below)})"
    if split != "test":
        return False, f"it was evaluated on the {split} split, and the gate compares test-split metrics only"
    if champion is None:
        shown = ", ".join(
            f"{metric} {metrics.get(metric, float('nan')):.4f}" for metric in deployment["champion_floor"]
        )
        return True, f"first champion, its test metrics pass deployment.champion_floor ({shown})"
    compared = summary.get("champion") or {}
    if str(compared.get("version")) != str(champion.version):
        evaluated_against = f"version {compared['version']}" if compared else "no champion"
        return False, (
            f"it was evaluated against {evaluated_against}, not the current champion version {champion.version}; "
            "run the evaluation again, then the deployment"
        )
    differences = compared.get("differences") or {}
    tolerance = deployment["tolerance"]
    worse = [
        f"{metric} {metrics[metric]:.4f} vs {compared['metrics'][metric]:.4f}"
        for metric in deployment["gate_metrics"]
        if differences.get(metric, float("-inf")) < -tolerance
    ]
    if worse:
        return False, (
            f"it is worse than champion version {champion.version} on the test split by more than the tolerance "
            f"{tolerance:g} ({'; '.join(worse)})"
        )
    shown = ", ".join(f"{metric} {differences[metric]:+.4f}" for metric in deployment["gate_metrics"])
    return (
        True,
        f"no worse than champion version {champion.version} on the test split ({shown}, tolerance {tolerance:g})",
    )


# --- helpers ------------------------------------------------------------------------------


def _rollback(client, name: str) -> dict[str, Any]:
    try:
        moved = model_registry.rollback(client, name)
    except LookupError as exc:
        raise ConfigurationError(f"cannot roll back: {exc}") from None
    logger.info(
        "Rolled back %s: champion moved from version %s to version %s", name, moved["from_version"], moved["to_version"]
    )
    return {
        "action": "rollback",
        "model_name": name,
        "version": moved["to_version"],
        **moved,
        "reason": f"rollback from version {moved['from_version']}",
    }


def _training_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigurationError(
            f"training run {run_id!r} named by the latest evaluation is not in this MLflow store; run the training "
            "and evaluation against this store first"
        ) from None


def _evaluation_run_id(client, training_run_id: str, experiment_ids: list[str]) -> str | None:
    """The newest run that evaluated ``training_run_id`` (the active run itself in a combined run)."""
    runs = client.search_runs(
        sorted(set(experiment_ids)),
        filter_string=f"tags.`{EVALUATION_TAG}` = 'true' and tags.evaluated_run_id = '{training_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
