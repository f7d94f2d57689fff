"""``python -m cv_pipelines.commands.matrix list``: the candidates that would run, trains nothing.

python -m cv_pipelines.commands.matrix list [--only a,b] [--exclude c] [--format table|namespaces|json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cv_pipelines.models.matrix import candidate_names, describe, select


def _csv(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


def main(argv: list[str] | None = None) -> int:
    """Print the candidates ``kedro run --pipelines matrix`` would train, as ``kedro run`` would read them.

    Returns the exit status: 0, or 2 after one ``Error: ...`` line on stderr when the
    parameters (or ``--params``, ``--only``, ``--exclude``) are wrong.
    """
    parser = argparse.ArgumentParser(
        prog="python -m cv_pipelines.commands.matrix", description=__doc__.splitlines()[0].strip()
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="show the candidates that would run, with their arguments; trains nothing")
    listing.add_argument("--only", help="comma-separated candidate names")
    listing.add_argument("--exclude", help="comma-separated candidate names")
    listing.add_argument("--env", default=None, help="Kedro configuration environment")
    listing.add_argument("--params", default=None, help="as `kedro run --params`, e.g. training.epochs=5")
    listing.add_argument("--format", choices=["table", "namespaces", "json"], default="table")
    listing.add_argument("--project-path", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)

    import click
    from kedro.framework.cli.utils import _split_params

    from cv_pipelines.config.loader import project_parameters

    try:
        # Kedro's own --params parser, given a click context so that a malformed item
        # fails with click's one-line usage error, as `kedro run --params` does.
        context = click.Context(click.Command(parser.prog))
        extra = _split_params(context, click.Option(["--params"]), args.params) if args.params else {}
        params = project_parameters(args.env, extra, root=args.project_path.resolve())
        from cv_pipelines.config.parameters import MatrixParams

        matrix = params.get("matrix") or {}
        settings = MatrixParams.model_validate(matrix)  # matrix.only / matrix.exclude as `kedro run` reads them
        names = select(
            candidate_names(matrix),
            _csv(args.only) or settings.only or None,
            (_csv(args.exclude) or []) + settings.exclude,
        )
        rows = describe(names, params["training"], matrix)
    except click.ClickException as exc:  # ConfigurationError, or click's UsageError for --params
        print(f"Error: {exc.format_message()}", file=sys.stderr)
        return 2
    if args.format == "namespaces":
        print(",".join(row["namespace"] for row in rows))
    elif args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        keys = ["trainer", "model", "epochs", "imgsz", "batch", "device", "seed"]
        print(
            f"{len(rows)} candidate(s) would run (`kedro run --pipelines matrix --namespaces "
            f"{','.join(r['namespace'] for r in rows)}`):"
        )
        for row in rows:
            arguments = " ".join(f"{key}={row[key]}" for key in keys)
            extra_args = " ".join(f"{k}={v}" for k, v in sorted((row.get("extra_args") or {}).items()))
            print(f"  {row['namespace']:<24} {arguments} {extra_args}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
