"""Nodes of the ``deployment`` pipeline: package, register, gate; or roll back.

The model deployed is the one the latest evaluation measured (``evaluated_model``, with
its verdict, so ``kedro run --pipelines training,evaluation,deployment`` deploys what
it just trained). Its weights are exported to ONNX, and both travel as artifacts of an
``mlflow.pyfunc`` model logged into this run (``cv_pipelines.models.packaged_model``).
The parity gate (``cv_pipelines.models.parity``) loads it back as the registry will
serve it and runs it on the evaluated split; only a model that detects what the
evaluation measured is registered under ``deployment.model_name``. The new version becomes
``challenger``; the quality gate (``cv_pipelines.models.gate``) promotes it to
``champion`` only on the evaluation's comparison with the current champion on the same
test split. The registry moves go through ``cv_pipelines.models.registry``.
"""

from __future__ import annotations

import logging
from typing import Any

from cv_pipelines.config.parameters import DeploymentParams
from cv_pipelines.config.resolvers import in_project, project_relative, project_root
from cv_pipelines.errors import ConfigurationError, ModelRefusedError
from cv_pipelines.files.run_folders import RunFolders
from cv_pipelines.models import packaging as model_packaging
from cv_pipelines.models import registry as model_registry
from cv_pipelines.models.gate import gate_decision
from cv_pipelines.models.packaging import PackagedModel
from cv_pipelines.models.parity import Parity, measure_parity
from cv_pipelines.models.runs import RunLookupError, TrackedModel, active_run, mlflow_client, training_run

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


def package_model(evaluated: TrackedModel, runs: RunFolders, deployment: DeploymentParams) -> PackagedModel:
    """The evaluated model's weights and ONNX file, config and input example; empty when nothing is deployed.

    Nothing is packaged for a rollback (``action: rollback``) or for a training run that
    is already registered (the handle then carries the version found, for
    ``register_model``); the ``packaged_model`` dataset logs the rest into this run.
    """
    if deployment.action == "rollback":
        return PackagedModel()
    active = _tracked_run()
    model_registry.tag_deployment_run({DEPLOYMENT_TAG: "true", "deployed_run_id": evaluated.run_id})
    existing = model_registry.version_of_training_run(mlflow_client(), deployment.model_name, evaluated.run_id)
    if existing is not None:
        return PackagedModel(
            registered_version=str(existing.version),
            registered_aliases=tuple(sorted(existing.aliases)),
            registered_tags=dict(existing.tags),
        )
    if evaluated.family not in model_packaging.FAMILIES:
        raise ConfigurationError(
            f"training run {evaluated.run_id} trained a model of family {evaluated.family!r}, and only Ultralytics "
            f"{' and '.join(model_packaging.FAMILIES)} models can be packaged; deploy a run of one of those"
        )
    root = project_root()
    weights, onnx, config = model_packaging.build_package(
        evaluated.weights, evaluated.family, runs.new(active.info.run_id), deployment, root
    )
    export_path = evaluated.summary.get("export_path")
    export_dir = in_project(root, export_path) if export_path else None
    example = model_packaging.example_image(export_dir if export_dir and export_dir.is_dir() else None, config["imgsz"])
    return PackagedModel(weights=weights, onnx=onnx, config=config, example=example)


def check_serving_parity(
    packaged: PackagedModel, evaluated: TrackedModel, deployment: DeploymentParams
) -> dict[str, Any]:
    """The parity figures of the logged model, loaded back as the registry serves it; empty when nothing was packaged.

    Measured on the split the evaluation measured, at its thresholds for mAP and at the
    deployment's for the boxes (``cv_pipelines.models.parity``); logged into this run.
    ``register_model`` refuses a model outside ``deployment.parity``.
    """
    import mlflow

    if packaged.model_uri is None:
        return {"measured": False, "reason": "nothing was packaged (a rollback, or a model already registered)"}
    summary = evaluated.summary
    split = summary.get("split", "test")
    export_path = summary.get("export_path")
    export_dir = in_project(project_root(), export_path) if export_path else None
    if export_dir is None or not export_dir.is_dir():
        raise ConfigurationError(
            f"the export the evaluation of run {evaluated.run_id} measured ({export_path or 'none recorded'}) is "
            "gone, so the packaged model cannot be checked against it; run the evaluation again, then the deployment"
        )
    parity = measure_parity(
        mlflow.pyfunc.load_model(packaged.model_uri),
        weights=evaluated.weights,
        family=evaluated.family,
        export_dir=export_dir,
        split=split,
        evaluated_map50_95=float((summary.get("metrics") or {})["mAP50-95"]),
        # Summaries written before the thresholds were recorded: Ultralytics' validator's own.
        map_thresholds=summary.get("thresholds") or {"conf": 0.001, "iou": 0.7},
        serving=packaged.config,
        match_iou=deployment.parity.match_iou,
    )
    mlflow.log_metrics(parity.metrics())
    logger.info(
        "Parity of the packaged model on %d %s images: mAP50-95 %.4f packaged vs %.4f evaluated; %.1f%% of the "
        "boxes at conf %g agree",
        parity.images,
        split,
        parity.packaged_map50_95,
        parity.evaluated_map50_95,
        100 * parity.box_agreement,
        parity.serving_conf,
    )
    return {"measured": True, **parity.report()}


def register_model(
    packaged: PackagedModel, parity: dict[str, Any], evaluated: TrackedModel, deployment: DeploymentParams
) -> dict[str, Any]:
    """Register the logged model as ``challenger`` and let the gate promote it; or skip, or roll back.

    A model outside ``deployment.parity`` is refused (``ModelRefusedError``) before it is
    registered; its parity figures are logged on the evaluation run either way.
    """
    client = mlflow_client()
    name = deployment.model_name
    if deployment.action == "rollback":
        return _rollback(client, name)
    if packaged.registered_version is not None:  # package_model asked the registry, once
        if model_registry.registration_finished(packaged.registered_tags):
            return _skipped(name, evaluated.run_id, packaged)
        # An earlier run registered the version, then lost the tracking server before the
        # gate's verdict and aliases: this run finishes the registration.
        logger.warning(
            "%s version %s (training run %s) was registered without its gate verdict; finishing its registration",
            name,
            packaged.registered_version,
            evaluated.run_id,
        )
        version = packaged.registered_version
        evaluation_run_id = packaged.registered_tags.get("evaluation_run_id") or None
        return _gate(client, name, version, evaluated, deployment, evaluation_run_id, packaged)
    if packaged.model_uri is None:  # package_model packages whatever is not registered yet
        raise RuntimeError(f"training run {evaluated.run_id} was neither registered nor packaged in this run")
    tags = _version_tags(client, evaluated, _tracked_run(), packaged.config, deployment)
    measured = _parity_of(parity)
    if tags["evaluation_run_id"]:
        for key, value in measured.metrics().items():
            client.log_metric(tags["evaluation_run_id"], key, value)
    refusal = measured.refusal(deployment.parity)
    if refusal:
        raise ModelRefusedError(
            f"registration of training run {evaluated.run_id} refused: {refusal}; nothing was registered"
        )
    tags |= {key: f"{value:.5g}" for key, value in measured.metrics().items()}
    version = model_registry.register_challenger(client, name, packaged.model_uri, tags)
    return _gate(client, name, version, evaluated, deployment, tags["evaluation_run_id"] or None, packaged)


def _gate(client, name, version, evaluated: TrackedModel, deployment, evaluation_run_id, packaged) -> dict[str, Any]:
    """Make ``version`` challenger, let the gate promote it, and say what was done."""
    summary = evaluated.summary
    challenger = model_registry.alias_version(client, name, model_registry.CHALLENGER)
    if challenger is None or str(challenger.version) != str(version):  # a registration cut short
        model_registry.make_challenger(client, name, version)
    champion = model_registry.alias_version(client, name, model_registry.CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        champion = None  # a promotion cut short: the gate decides against the floor again
    promoted, reason = gate_decision(summary, champion, deployment)
    previous = model_registry.record_gate(client, name, version, promoted, reason)
    return {
        "action": "promoted" if promoted else "held",
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "aliases": ["champion"] if promoted else ["challenger"],
        "previous_champion": previous,
        "reason": reason,
        "training_run_id": evaluated.run_id,
        "evaluation_run_id": evaluation_run_id,
        "split": summary.get("split", "test"),
        "metrics": summary.get("metrics"),
        "use_onnx": deployment.use_onnx,
        "onnx": project_relative(packaged.onnx, project_root()) if packaged.onnx else None,
    }


# --- helpers ------------------------------------------------------------------------------


def _parity_of(report: dict[str, Any]) -> Parity:
    fields = Parity.__dataclass_fields__
    return Parity(**{key: value for key, value in report.items() if key in fields})


def _tracked_run():
    """The deployment's MLflow run; a one-sentence error when tracking is off for it."""
    active = active_run()
    if active is None:
        raise ConfigurationError(
            "the deployment pipeline needs MLflow tracking (it logs the packaged model into its run); remove "
            "'deployment' from tracking.disable_tracking.pipelines in conf/base/mlflow.yml"
        )
    return active


def _version_tags(client, evaluated: TrackedModel, active, config: dict[str, Any], deployment: DeploymentParams):
    """The model version's tags: the training, evaluation and deployment runs, the code and the data."""
    try:
        run = training_run(client, evaluated.run_id, allow_unfinished=active.info.run_id)
    except RunLookupError as exc:
        raise ConfigurationError(
            f"{exc}: the latest evaluation names it; run the training and evaluation against this store first"
        ) from None
    summary, run_tags = evaluated.summary, run.data.tags
    split = summary.get("split", "test")
    evaluation_run_id = model_registry.latest_evaluation_run_id(
        client, evaluated.run_id, [run.info.experiment_id, active.info.experiment_id]
    )
    return {
        model_registry.TRAINING_RUN_TAG: evaluated.run_id,
        "evaluation_run_id": evaluation_run_id or "",
        "deployment_run_id": active.info.run_id,
        "code_commit": run_tags.get("code_commit", ""),
        "code_dirty": run_tags.get("code_dirty", ""),
        **{f"data.{key}": str(summary.get(key) or run_tags.get(f"data.{key}", "")) for key in LINEAGE_KEYS},
        **{f"{split}/{metric}": str(value) for metric, value in (summary.get("metrics") or {}).items()},
        "evaluated_split": split,
        "model_family": evaluated.family,
        "use_onnx": str(deployment.use_onnx).lower(),
        "imgsz": str(config["imgsz"]),
    }


def _skipped(name: str, run_id: str, packaged: PackagedModel) -> dict[str, Any]:
    version = packaged.registered_version
    logger.info(
        "Skipped: training run %s is already registered as %s version %s (%s); nothing registered",
        run_id,
        name,
        version,
        ", ".join(packaged.registered_aliases) or "no alias",
    )
    return {
        "action": "skipped",
        "model_name": name,
        "version": version,
        "training_run_id": run_id,
        "aliases": list(packaged.registered_aliases),
        "reason": f"training run {run_id} is already registered as version {version}",
    }


def _rollback(client, name: str) -> dict[str, Any]:
    try:
        moved = model_registry.rollback(client, name)
    except LookupError as exc:
        raise ConfigurationError(f"cannot roll back: {exc}") from None
    logger.info(
        "Rolled back %s: champion moved from version %s to version %s",
        name,
        moved["from_version"],
        moved["to_version"],
    )
    return {
        "action": "rollback",
        "model_name": name,
        "version": moved["to_version"],
        **moved,
        "reason": f"rollback from version {moved['from_version']}",
    }
