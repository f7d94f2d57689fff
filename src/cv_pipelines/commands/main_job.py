"""The main job: the whole loop on the demo data, one Kedro session per pipeline.

``python -m cv_pipelines.commands.main_job`` (what ``make demo`` runs) strings together the
pipelines that exist, in the order of the design, and ends with a summary of what
was produced and where. Each step is a real ``kedro run`` of one pipeline, so what
it does is exactly what a user or an orchestrator gets from the same commands.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("cv_pipelines.commands.main_job")


@dataclass
class StepReport:
    """One step of the main job: its name, how long it took, and what it did in one line."""

    name: str
    seconds: float
    detail: str


def _run_pipeline(project_path: Path, name: str, env: str | None, params: dict | None = None) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.runner import SequentialRunner

    # Not `with ... as session`: Kedro 1.7 types __enter__ as its abstract base, without run()'s arguments.
    session = KedroSession.create(project_path=project_path, env=env, runtime_params=params or {})
    with session:
        # A runner object, as `kedro run` passes: with none, Kedro records the runner as
        # None's default class name and kedro-viz warns "Workflow tracking is disabled for
        # non-sequential runners" at every step.
        return session.run(pipeline_names=[name], runner=SequentialRunner())


@dataclass
class _Job:
    """The project the job runs on, and what earlier steps found (the version tag, the export, the training)."""

    project_path: Path
    env: str | None
    state: dict[str, Any] = field(default_factory=dict)
    _reader: Any = None

    def run(self, pipeline: str, params: dict | None = None) -> None:
        _run_pipeline(self.project_path, pipeline, self.env, params)

    def load(self, name: str) -> Any:
        return self.catalog().load(name)

    def load_if_exists(self, name: str) -> Any:
        catalog = self.catalog()
        return catalog.load(name) if catalog.exists(name) else None

    def catalog(self) -> Any:
        """A new catalog of the project, as a ``kedro run`` sees it: its datasets read the disk afresh.

        The catalogs come from one Kedro context, made on the first read, so the job pays
        for one session's start-up (the hooks, kedro-mlflow's configuration) for all its reads.
        """
        if self._reader is None:
            from kedro.framework.session import KedroSession

            session = KedroSession.create(project_path=self.project_path, env=self.env)
            with session:
                self._reader = session.load_context()
        return self._reader.catalog


def run_main_job(project_path: Path, env: str | None = None) -> list[StepReport]:
    """Run the loop's pipelines on ``project_path`` one Kedro session each, skipping what is up to date."""
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_path)
    job = _Job(project_path, env)
    reports: list[StepReport] = []
    for name, step in _STEPS:
        started = time.perf_counter()
        detail = step(job)
        reports.append(StepReport(name, time.perf_counter() - started, detail))
    return reports


def _demo_data(job: _Job) -> str:
    job.run("demo_data")
    return "data/demo (images + COCO)"


def _ingestion(job: _Job) -> str:
    job.run("ingestion")
    return "data/incoming -> data/store, data/registry/images"


def _import_coco(job: _Job) -> str:
    # The demo is a labeled data set: its images and boxes enter through the COCO import,
    # which runs the images through the same checks and store as ingestion.
    job.run("import_coco", {"import_coco": {"source": "data/demo", "name": "demo"}})
    summary = job.load("coco_import_summary")
    return (
        f"{summary['labeled_images']} labeled images, {summary['boxes']} boxes -> data/registry/{{annotations,labels}}"
    )


def _snapshot(job: _Job) -> str:
    # The labeled data becomes a dataset version: DVC pointers committed, tagged
    # data/<label_set>/v<N> (no commit when nothing changed), and the export reads the
    # registries as of that tag, so its lineage names the version.
    job.run("snapshot")
    snapshot = job.load("snapshot_report")
    tag = job.state["tag"] = snapshot["tag"] or _latest_dataset_tag(job.project_path, job.env)
    return (
        f"{tag} (commit {snapshot['commit'][:12]})"
        if snapshot["committed"]
        else f"skipped, nothing changed since {tag}"
    )


def _export(job: _Job) -> str:
    tag = job.state.get("tag")
    job.run("export", {"dataset_version": tag} if tag else None)
    export = job.state["export"] = job.load("export_summary")
    state = "written" if export["written"] else "unchanged, already"
    counts = export["counts"]["images"]
    return f"{export['path']} ({state}; train {counts['train']}, val {counts['val']}, test {counts['test']})"


def _training(job: _Job) -> str:
    # Training is the expensive step: a model already trained on this very export with
    # these parameters is not trained again (deterministic training would repeat it).
    export = job.state["export"]
    trained = _current_training(job, export["content_hash"])
    if trained is not None:
        job.state["trained"] = trained
        return (
            f"skipped: run {trained['mlflow_run_id'][:12]} already trained on {export['path']} with these parameters "
            f"({trained['run_dir']})"
        )
    job.run("training")
    trained = job.state["trained"] = job.load("trained_model").summary
    return f"{trained['run_dir']} ({trained['epochs_done']} epochs, MLflow run {trained['mlflow_run_id'][:12]})"


def _evaluation(job: _Job) -> str:
    evaluated = job.load_if_exists("evaluated_model")
    skipped = evaluated is not None and evaluated.run_id == job.state["trained"]["mlflow_run_id"]
    if not skipped:
        job.run("evaluation")
        evaluated = job.load("evaluated_model")
    summary = evaluated.summary
    metrics = summary["metrics"]
    return ("skipped, already evaluated: " if skipped else "") + (
        f"{summary['split']} mAP50 {metrics['mAP50']:.3f}, mAP50-95 {metrics['mAP50-95']:.3f}, "
        f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f} -> data/reporting/evaluation/"
    )


def _deployment(job: _Job) -> str:
    # Deployment skips a training run that is already registered, by itself.
    job.run("deployment")
    return _deployment_detail(job.load("deployment_summary"))


def _serving(job: _Job) -> str:
    return _serve_one_request(job.project_path, job.env, job.state["export"])


#: The loop, in the order of the data; each step returns the line the summary prints.
_STEPS = (
    ("demo_data", _demo_data),
    ("ingestion", _ingestion),
    ("import_coco", _import_coco),
    ("snapshot", _snapshot),
    ("export", _export),
    ("training", _training),
    ("evaluation", _evaluation),
    ("deployment", _deployment),
    ("serving", _serving),
)


def _deployment_detail(deployed: dict) -> str:
    name, version = deployed["model_name"], deployed.get("version")
    if deployed["action"] == "skipped":
        return f"skipped: {deployed['reason']} ({', '.join(deployed.get('aliases') or []) or 'no alias'})"
    if deployed["action"] == "promoted":
        return f"{name} version {version} is @champion ({deployed['reason']})"
    return f"{name} version {version} stays @challenger: {deployed['reason']}"


def _serve_one_request(project_path: Path, env: str | None, export: dict) -> str:
    """Start the detection service on a free port, send it one test image, stop it."""
    import http.client
    import json
    import threading

    import mlflow

    from cv_pipelines.config.loader import project_tracking_uri
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.serving.service import _project_deployment_params, build_service, make_server

    mlflow.set_tracking_uri(project_tracking_uri(env, project_path))
    params = _project_deployment_params(env)
    try:
        service = build_service(params["model_name"], use_onnx=params["use_onnx"])
    except ConfigurationError as exc:
        return f"skipped: {exc}"
    images = sorted((project_path / export["path"] / "images/test").iterdir())
    server = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
        connection.request("POST", "/predict", body=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        answer = json.loads(connection.getresponse().read())
    finally:
        server.shutdown()
        server.server_close()
    return (
        f"POST /predict on 127.0.0.1:{server.server_address[1]} with {images[0].name[:12]}...: "
        f"{len(answer.get('detections', []))} detection(s) from version {answer.get('version')} "
        f"in {answer.get('latency_ms')} ms; serve it with `python -m cv_pipelines.serving`"
    )


def _latest_dataset_tag(project_path: Path, env: str | None) -> str | None:
    import subprocess

    from cv_pipelines.config.loader import project_parameters

    label_set = project_parameters(env, root=project_path)["labeling"]["label_set"]
    tags = subprocess.run(
        ["git", "tag", "--list", f"data/{label_set}/v*", "--sort=-v:refname"],
        cwd=project_path,
        capture_output=True,
        text=True,
    ).stdout.split()
    return tags[0] if tags else None


def _current_training(job: _Job, export_hash: str) -> dict | None:
    """The last training's summary if it trained on this export with today's parameters."""
    from kedro.io import DatasetError

    from cv_pipelines.config.loader import section_parameters
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.models.training import parameters_hash

    try:
        trained = job.load_if_exists("trained_model")
    except DatasetError as exc:
        reason: BaseException | None = exc
        while reason is not None and not isinstance(reason, ConfigurationError):
            reason = reason.__cause__  # Kedro wraps the dataset's own error, once per layer
        if reason is None:
            raise
        # The recorded training did not finish (a crash, a server that went away): train again.
        logger.warning("The last training is not usable (%s); training again", reason)
        return None
    if trained is None:
        return None
    summary = trained.summary
    training = section_parameters("training", env=job.env, root=job.project_path)
    if summary.get("export_content_hash") != export_hash or summary.get("parameters_hash") != parameters_hash(training):
        return None
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m cv_pipelines.commands.main_job``: run the loop, print what it made and where."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=None, help="Kedro configuration environment (default: local)")
    parser.add_argument("--project-path", type=Path, default=Path.cwd())
    parser.add_argument(
        "--verbose", action="store_true", help="show every tool's own output (Kedro's nodes, Ultralytics, MLflow)"
    )
    args = parser.parse_args(argv)
    if args.verbose:
        from cv_pipelines.config.console import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"  # read when the project's settings load, before any step
    started = time.perf_counter()
    reports = run_main_job(args.project_path.resolve(), args.env)
    print("\ncv_pipelines main job: done in %.1f s" % (time.perf_counter() - started))
    for report in reports:
        print(f"  {report.name:<12} {report.seconds:6.1f} s  {report.detail}")
    from cv_pipelines.config.loader import project_tracking_uri

    tracking = project_tracking_uri(args.env, args.project_path.resolve())
    runs = (
        f"{tracking:<63}"
        if tracking.startswith("http")
        else "mlflow ui --backend-store-uri sqlite:///data/mlflow/mlflow.db   "
    )
    print(
        "\nNext:\n"
        f"  {runs}training and evaluation runs\n"
        "  kedro viz run --host 127.0.0.1 --no-browser                     the pipelines and their outputs\n"
        "  kedro ipython                                                   catalog.load('images_registry'), ...\n"
        "  data/reporting/                                                 export health, evaluation plots"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
