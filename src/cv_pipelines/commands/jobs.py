"""``python -m cv_pipelines.commands.jobs``: a training as a Kubernetes Job, rendered or submitted to a provider.

python -m cv_pipelines.commands.jobs render --dataset-version data/demo/v1 --candidate default [--gpus 1]
python -m cv_pipelines.commands.jobs submit --dataset-version data/demo/v1 --candidate default [--provider local]
python -m cv_pipelines.commands.jobs status local cv-train-default-0123456789
python -m cv_pipelines.commands.jobs cancel kubernetes cv-train-default-0123456789
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

PROVIDERS = ("local", "dask", "kubernetes")
#: How often ``submit --wait`` asks the provider for the job's status, in seconds.
WAIT_POLL_S = 5.0


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset-version", required=True, help="a dataset version tag, e.g. data/demo/v1")
    parser.add_argument("--candidate", required=True, help="a matrix.candidates name (default: with none)")
    parser.add_argument("--image", default=None, help="container image (default: compute.kubernetes.image)")
    parser.add_argument("--commit", default=None, help="the code commit the job runs (default: HEAD)")
    parser.add_argument("--repository", default=None, help="the git URL the job clones (default: compute.yml)")
    parser.add_argument("--gpus", type=int, default=None, help="nvidia.com/gpu count (default: compute.yml)")
    parser.add_argument("--name", default=None, help="the Job's name (default: from the request)")
    parser.add_argument("--params", action="append", default=[], help="a further kedro run --params item")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cv_pipelines.commands.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local", help="Kedro configuration environment (of the job too)")
    parser.add_argument("--project-path", type=Path, default=Path.cwd())
    sub = parser.add_subparsers(dest="command", required=True)
    _training_arguments(sub.add_parser("render", help="print the training's batch/v1 Job as YAML"))
    submit = sub.add_parser("submit", help="submit the training's Job to a compute provider")
    _training_arguments(submit)
    submit.add_argument("--provider", choices=PROVIDERS, default=None, help="try this provider first")
    submit.add_argument(
        "--strategy",
        choices=["preferred", "first_available", "queue", "fastest", "cheapest"],
        default=None,
        help="how a provider is picked (default: compute.strategy)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the job to end (always, on a LocalCluster)")
    for verb in ("status", "cancel"):
        command = sub.add_parser(verb, help=f"{verb} a submitted job")
        command.add_argument("provider", choices=PROVIDERS)
        command.add_argument("job_id")
    return parser


def render_from_arguments(args: argparse.Namespace, root: Path, provider: str | None = None) -> dict[str, Any]:
    """The Job of the command line's training request (checked against the schema)."""
    from pydantic import ValidationError

    from cv_pipelines.config.loader import project_parameters
    from cv_pipelines.engines.compute_settings import compute_settings
    from cv_pipelines.engines.kubernetes_job import candidate_params, code_repository_of, render_job, validate_manifest
    from cv_pipelines.engines.requests import TrainingRequest
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.versioning.dataset_versions import check_dataset_version, current_commit

    try:
        request = TrainingRequest(
            dataset_version=args.dataset_version,
            candidate=args.candidate,
            env=args.env,
            provider=provider,
            params=tuple(args.params),
        )
    except ValidationError as exc:
        raise ConfigurationError(
            f"The training request is invalid: {exc.errors()[0]['msg'].removeprefix('Value error, ')}; fix that option."
        ) from None
    if args.gpus is not None and args.gpus < 0:
        raise ConfigurationError(f"--gpus {args.gpus} is negative; pass 0 or more.")
    settings = compute_settings(args.env, root)
    check_dataset_version(root, args.dataset_version)
    commit = current_commit(root, args.commit or "HEAD")
    if commit is None:
        raise ConfigurationError(
            f"--commit {args.commit or 'HEAD'} is not a commit of {root}'s git repository; pass one `git log` lists."
        )
    candidate_items = candidate_params(args.candidate, project_parameters(args.env, root=root))
    manifest = render_job(
        request,
        commit=commit,
        repository=args.repository or code_repository_of(root, settings),
        settings=settings,
        candidate_items=candidate_items,
        image=args.image,
        gpus=args.gpus,
        name=args.name,
    )
    validate_manifest(manifest)
    return manifest


def _providers(names: list[str], root: Path, env: str):
    from cv_pipelines.engines.compute_settings import compute_settings
    from cv_pipelines.engines.providers import make_provider

    settings = compute_settings(env, root)
    return settings, [make_provider(name, settings, root / "data/jobs") for name in names]


def _submit(args: argparse.Namespace, root: Path) -> int:
    from cv_pipelines.engines.compute_settings import compute_settings
    from cv_pipelines.engines.kubernetes_job import LABEL_PREFIX
    from cv_pipelines.engines.providers import DaskProvider, provider_order, submit_with_strategy
    from cv_pipelines.versioning.code import check_published

    settings = compute_settings(args.env, root)
    order = provider_order(args.provider, settings.providers)
    manifest = render_from_arguments(args, root, provider=order[0])
    annotations = manifest["metadata"]["annotations"]
    unchecked = check_published(
        root,
        annotations[f"{LABEL_PREFIX}/code-repository"],
        annotations[f"{LABEL_PREFIX}/code-commit"],
        args.dataset_version,
    )
    if unchecked:
        print(f"jobs: not checked that the job can fetch its code and tag: {unchecked}.", file=sys.stderr)
    strategy = args.strategy or settings.strategy
    job_hours = _job_hours(args.candidate, root, args.env) if strategy in ("fastest", "cheapest") else None
    _, providers = _providers(order, root, args.env)
    try:
        submission, provider = submit_with_strategy(
            manifest, providers, strategy, job_hours=job_hours, price_per_hour=settings.price_per_hour
        )
        print(f"jobs: {submission.job_id} submitted to {submission.provider}")
        if isinstance(provider, DaskProvider) and (args.wait or not settings.dask.address):
            state = provider.wait(submission.job_id)
        elif args.wait:
            import time

            while (state := provider.status(submission.job_id)) in ("pending", "running"):
                time.sleep(WAIT_POLL_S)
        else:
            return 0
    finally:
        # Every Dask provider that was validated holds a client (and maybe a LocalCluster), chosen or not.
        for each in providers:
            if isinstance(each, DaskProvider):
                each.close()
    print(f"jobs: {submission.job_id} {state}")
    return 0 if state == "succeeded" else 1


def _job_hours(candidate: str, root: Path, env: str) -> dict[str, list[float]]:
    """How long ``candidate`` trained on each provider before, from the environment's MLflow store; {} if it is down."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from cv_pipelines.config.console import restore_logger_level
    from cv_pipelines.config.loader import project_tracking_uri
    from cv_pipelines.models.runs import job_hours_by_provider

    restore_logger_level("mlflow")  # its import sets its own level (INFO: "Creating initial MLflow database tables")
    uri = project_tracking_uri(env, root)
    try:
        return job_hours_by_provider(MlflowClient(uri), candidate)
    except (MlflowException, OSError) as exc:
        print(
            f"jobs: no training history ({uri} did not answer: {type(exc).__name__}); the configured order decides.",
            file=sys.stderr,
        )
        return {}


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (a caller may have redirected it since the handler was made)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("jobs: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _console_logging() -> None:
    """Libraries quiet; the providers' sentences (which provider, why a fallback) on stderr, once per process."""
    from cv_pipelines.config.console import apply_console_defaults

    apply_console_defaults()
    providers_logger = logging.getLogger("cv_pipelines.engines.providers")
    providers_logger.setLevel(logging.INFO)
    if not any(isinstance(handler, _StderrHandler) for handler in providers_logger.handlers):
        providers_logger.addHandler(_StderrHandler())


def main(argv: list[str] | None = None) -> int:
    """The command line: 0, or 2/3 after one ``Error: ...`` line on stderr (bad input / a service failed)."""
    args = _parser().parse_args(argv)
    _console_logging()
    root = args.project_path.resolve()
    import click

    try:
        if args.command == "render":
            from cv_pipelines.engines.kubernetes_job import manifest_yaml

            print(manifest_yaml(render_from_arguments(args, root)), end="")
        elif args.command == "submit":
            return _submit(args, root)
        else:
            _, (provider,) = _providers([args.provider], root, args.env)
            if args.command == "status":
                print(f"jobs: {args.job_id} {provider.status(args.job_id)}")
            else:
                provider.cancel(args.job_id)
                print(f"jobs: {args.job_id} cancelled on {args.provider}")
    except click.ClickException as exc:  # ConfigurationError (2) or ExternalServiceError (3)
        print(f"Error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
