"""The MLflow Model Registry as the deployment pipeline uses it: versions, aliases, history.

Aliases, not stages (deprecated): ``challenger`` is the newest version that has not
been promoted, ``champion`` the one serving. The registry keeps no record of where an
alias pointed before, so every move of ``champion`` is appended to the registered
model's tag ``champion_history`` (a JSON list of version numbers, oldest first), which
is what a rollback walks back on. Every function takes an ``MlflowClient``, so it works
the same against the embedded SQLite store and a tracking server.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Registered-model tag: the versions that have been champion, oldest first.
HISTORY_TAG = "champion_history"
#: Model version tag naming the training run of its weights (read by the evaluation).
TRAINING_RUN_TAG = "training_run_id"


def now() -> str:
    """The current UTC time as the registry's tags record it (``2026-01-31T12:00:00Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model ``name`` (with its description) unless it already exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Object detector: images in, detections (class, box in pixels, score) out."
        )


def version_of_training_run(client: MlflowClient, name: str, training_run_id: str) -> ModelVersion | None:
    """The version already registered for ``training_run_id``, or None."""
    versions = client.search_model_versions(f"name = '{name}'")
    matching = [v for v in versions if v.tags.get(TRAINING_RUN_TAG) == training_run_id]
    if not matching:
        return None
    # Searched versions may come without their aliases; a direct get has them.
    return client.get_model_version(name, min(matching, key=lambda v: int(v.version)).version)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The model version ``alias`` points at, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """The versions that have been ``champion``, oldest first (empty for a model not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return []
    return [str(v) for v in json.loads(model.tags.get(HISTORY_TAG, "[]"))]


def _set_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([int(v) for v in history]))


def make_challenger(client: MlflowClient, name: str, version: str) -> None:
    """Point ``challenger`` at ``version`` and stamp the version's ``challenger_since`` tag."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, "challenger_since", now())


def promote(client: MlflowClient, name: str, version: str, reason: str) -> str | None:
    """Point ``champion`` at ``version`` (it stops being the challenger); returns the previous champion."""
    previous = alias_version(client, name, CHAMPION)
    history = champion_history(client, name)
    if previous is not None and (not history or history[-1] != str(previous.version)):
        # champion was moved by hand since: keep that version reachable by a rollback.
        history.append(str(previous.version))
    history.append(str(version))
    client.set_registered_model_alias(name, CHAMPION, version)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "champion_since", now())
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    _set_history(client, name, history)
    return str(previous.version) if previous is not None else None


def rollback(client: MlflowClient, name: str) -> dict[str, Any]:
    """Move ``champion`` back to the champion before it; raises ``LookupError`` when there is none."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise LookupError(f"registered model '{name}' has no champion to roll back")
    history = champion_history(client, name)
    current_version = str(current.version)
    while history and history[-1] == current_version:
        history.pop()
    existing = {str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
    while history and history[-1] not in existing:  # a version deleted since
        history.pop()
    if not history:
        raise LookupError(f"registered model '{name}' has had no champion before version {current_version}")
    previous = history[-1]
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, current_version, "rolled_back_at", now())
    client.set_model_version_tag(name, previous, "champion_since", now())
    _set_history(client, name, history)
    return {"from_version": current_version, "to_version": previous}


def registration_finished(tags: dict[str, str]) -> bool:
    """Whether a version's ``tags`` hold the gate's verdict (and, when promoted, the champion's stamp).

    False for a version whose registration was cut short between ``register_model`` and
    the gate (the tracking server lost): the next deployment finishes it.
    """
    return "gate" in tags and (tags["gate"] != "promoted" or "champion_since" in tags)


def register_challenger(client, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name`` with ``tags`` and make it ``challenger``; its version."""
    import mlflow  # heavy import kept local

    from cv_pipelines.config.console import stderr_as_log

    ensure_registered_model(client, name)
    # MLflow prints "Created version '3' of model ..." to stderr; the node's summary says it.
    with stderr_as_log("mlflow"):
        version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    make_challenger(client, name, version)
    return version


def record_gate(client, name: str, version: str, promoted: bool, reason: str) -> str | None:
    """Tag the gate's verdict on ``version`` (and the active run); promote it when ``promoted``.

    Returns the previous champion's version when it was promoted.
    """
    import mlflow  # heavy import kept local

    verdict = "promoted" if promoted else "held"
    client.set_model_version_tag(name, version, "gate", verdict)
    client.set_model_version_tag(name, version, "gate_reason", reason)
    previous = promote(client, name, version, reason) if promoted else None
    mlflow.set_tags({"registered_model": name, "model_version": version, "gate": verdict})
    if promoted:
        logger.info("Registered %s version %s and promoted it to champion: %s", name, version, reason)
    else:
        logger.warning("Registered %s version %s; it stays challenger: %s", name, version, reason)
    return previous


def tag_deployment_run(tags: dict[str, str]) -> None:
    """Tag the active (deployment) run."""
    import mlflow  # heavy import kept local

    mlflow.set_tags(tags)


def latest_evaluation_run_id(client, training_run_id: str, experiment_ids: list[str]) -> str | None:
    """The newest run that evaluated ``training_run_id`` (the active run itself in a combined run)."""
    from cv_pipelines.models.lineage import EVALUATION_TAG

    runs = client.search_runs(
        sorted(set(experiment_ids)),
        filter_string=f"tags.`{EVALUATION_TAG}` = 'true' and tags.evaluated_run_id = '{training_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
