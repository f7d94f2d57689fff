"""The training matrix: candidates from the parameters, and the command that lists them.

``matrix.candidates`` (``conf/base/parameters_matrix.yml``) maps a candidate name to
overrides of the ``training`` parameters (``extra_args`` merged key by key) and an
optional ``trainer``. Each candidate becomes the namespace ``matrix.<name>`` of the
``matrix`` pipeline, so Kedro's own filters select candidates::

    kedro run --pipelines matrix                                   # every candidate
    kedro run --pipelines matrix --namespaces matrix.yolov8n,matrix.rtdetr_l

and this command shows what would run, with which arguments, without training::

    python -m cv_pipelines.matrix list [--only a,b] [--exclude c] [--format table|namespaces|json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cv_pipelines.errors import ConfigurationError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: The candidate of an empty ``matrix.candidates``: the training parameters as they are.
DEFAULT_CANDIDATE = "default"
NAMESPACE = "matrix"


def namespace_of(name: str) -> str:
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

    from cv_pipelines.parameters import TrainingParams, describe_validation_error

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
    unknown = sorted((set(only or []) | set(exclude or [])) - set(names))
    if unknown:
        raise ConfigurationError(f"unknown matrix candidate(s) {', '.join(unknown)}; the candidates are {', '.join(names)}")
    return [n for n in names if (not only or n in only) and n not in set(exclude or [])]


def registration_parameters() -> dict[str, Any]:
    """Parameters read when the pipelines are registered, before any session exists.

    Kedro registers pipelines without knowing ``--env``, so the candidates come from
    ``conf/base`` merged with the environment in ``KEDRO_ENV`` (default ``local``).
    """
    from cv_pipelines.config_resolvers import project_parameters

    try:
        return project_parameters(os.environ.get("KEDRO_ENV"))
    except Exception:  # a broken configuration is reported by the run itself, with its reason
        return {}


def describe(names: list[str], training: Mapping[str, Any], matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        params = candidate_parameters(name, training, matrix)
        rows.append({"candidate": name, "namespace": namespace_of(name), **params})
    return rows


def _csv(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cv_pipelines.matrix", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="show the candidates that would run, with their arguments; trains nothing")
    listing.add_argument("--only", help="comma-separated candidate names")
    listing.add_argument("--exclude", help="comma-separated candidate names")
    listing.add_argument("--env", default=None, help="Kedro configuration environment")
    listing.add_argument("--params", default=None, help="as `kedro run --params`, e.g. training.epochs=5")
    listing.add_argument("--format", choices=["table", "namespaces", "json"], default="table")
    listing.add_argument("--project-path", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)

    from kedro.framework.cli.utils import _split_params

    from cv_pipelines.config_resolvers import project_parameters

    try:
        extra = _split_params(None, None, args.params) if args.params else {}
        params = project_parameters(args.env, extra, root=args.project_path.resolve())
        from cv_pipelines.parameters import MatrixParams

        matrix = params.get("matrix") or {}
        settings = MatrixParams.model_validate(matrix)  # matrix.only / matrix.exclude as `kedro run` reads them
        names = select(candidate_names(matrix), _csv(args.only) or settings.only or None,
                       (_csv(args.exclude) or []) + settings.exclude)
        rows = describe(names, params["training"], matrix)
    except ConfigurationError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if args.format == "namespaces":
        print(",".join(row["namespace"] for row in rows))
    elif args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        keys = ["trainer", "model", "epochs", "imgsz", "batch", "device", "seed"]
        print(f"{len(rows)} candidate(s) would run (`kedro run --pipelines matrix --namespaces "
              f"{','.join(r['namespace'] for r in rows)}`):")
        for row in rows:
            settings = " ".join(f"{key}={row[key]}" for key in keys)
            extra_args = " ".join(f"{k}={v}" for k, v in sorted((row.get("extra_args") or {}).items()))
            print(f"  {row['namespace']:<24} {settings} {extra_args}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
