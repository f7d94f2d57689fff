"""The training matrix: candidates from the parameters.

``matrix.candidates`` (``conf/base/parameters_matrix.yml``) maps a candidate name to
overrides of the ``training`` parameters (``extra_args`` merged key by key) and an
optional ``trainer``. Each candidate becomes the namespace ``matrix.<name>`` of the
``matrix`` pipeline, so Kedro's own filters select candidates::

    kedro run --pipelines matrix                                   # every candidate
    kedro run --pipelines matrix --namespaces matrix.yolov8n,matrix.rtdetr_l

``python -m cv_pipelines.commands.matrix list`` shows what would run, without training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from cv_pipelines.errors import ConfigurationError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: The candidate of an empty ``matrix.candidates``: the training parameters as they are.
DEFAULT_CANDIDATE = "default"
NAMESPACE = "matrix"


def namespace_of(name: str) -> str:
    """The Kedro namespace of candidate ``name`` in the ``matrix`` pipeline (``matrix.<name>``)."""
    return f"{NAMESPACE}.{name}"


def candidate_names(matrix: Mapping[str, Any]) -> list[str]:
    """Candidate names in the order written; checked to be usable as Kedro namespaces."""
    candidates = matrix.get("candidates") or {}
    if not isinstance(candidates, Mapping):
        raise ConfigurationError("matrix.candidates must map candidate names to training overrides")
    for name in candidates:
        if not NAME.fullmatch(str(name)):
            raise ConfigurationError(
                f"matrix candidate name {name!r} is not usable as a Kedro namespace; use letters, digits and "
                "underscores, starting with a letter"
            )
    return list(candidates) or [DEFAULT_CANDIDATE]


def candidate_parameters(name: str, training: Mapping[str, Any], matrix: Mapping[str, Any]) -> dict[str, Any]:
    """The training parameters of candidate ``name`` (validated), plus its ``trainer``."""
    from pydantic import ValidationError

    from cv_pipelines.config.parameters import TrainingParams, describe_validation_error

    overrides = dict((matrix.get("candidates") or {}).get(name) or {})
    trainer = overrides.pop("trainer", "ultralytics")
    merged = {**dict(training), **overrides}
    merged["extra_args"] = {**dict(training.get("extra_args") or {}), **dict(overrides.get("extra_args") or {})}
    try:
        validated = TrainingParams.model_validate(merged).model_dump()
    except ValidationError as exc:
        raise ConfigurationError(
            f"matrix.candidates.{name}: {describe_validation_error(exc).removeprefix('Parameter ')}"
        ) from None
    # Relative folders and devices as configured, not as pydantic normalised them.
    return {**merged, **{k: v for k, v in validated.items() if k not in merged}, "trainer": trainer}


def select(names: list[str], only: list[str] | None, exclude: list[str] | None) -> list[str]:
    """``names`` in their order, kept to ``only`` (when given) and without ``exclude``.

    Raises ``ConfigurationError`` naming any candidate in ``only`` or ``exclude`` that is
    not one of ``names``, so a typo never silently selects nothing.
    """
    unknown = sorted((set(only or []) | set(exclude or [])) - set(names))
    if unknown:
        raise ConfigurationError(
            f"unknown matrix candidate(s) {', '.join(unknown)}; the candidates are {', '.join(names)}"
        )
    return [n for n in names if (not only or n in only) and n not in set(exclude or [])]


def registration_parameters() -> dict[str, Any]:
    """Parameters read when the pipelines are registered, before any session exists.

    Kedro registers pipelines without knowing ``--env``, so the candidates come from
    ``conf/base`` merged with the environment in ``KEDRO_ENV`` (default ``local``).
    """
    from cv_pipelines.config.loader import project_parameters

    try:
        return project_parameters(os.environ.get("KEDRO_ENV"))
    except Exception:  # a broken configuration is reported by the run itself, with its reason
        return {}


def describe(names: list[str], training: Mapping[str, Any], matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per candidate: its name, namespace, trainer and validated training parameters.

    Raises ``ConfigurationError`` naming the candidate whose overrides are invalid.
    """
    rows = []
    for name in names:
        params = candidate_parameters(name, training, matrix)
        rows.append({"candidate": name, "namespace": namespace_of(name), **params})
    return rows
