"""Nodes of the ``matrix`` pipeline: train and evaluate one candidate; rank them all.

kedro-mlflow opens one run for the ``kedro run``: the matrix's parent run (its id is the
matrix id). Every candidate gets its own MLflow run nested under it (``mlflow.parentRunId``)
and tagged ``cv_pipelines.matrix_id`` and ``cv_pipelines.candidate``, holding what a
``training`` run holds (parameters, per-epoch history, weights and plots, the export
as dataset input, lineage tags) plus its test-split metrics. Such a run is tagged as a
training run, so ``evaluation.run_id`` and the deployment take it like any other.

A failed candidate is retried ``matrix.retries`` times, each attempt in a new folder
and run; then it is reported as failed without stopping the others, unless
``matrix.fail_fast``. ``check_required`` ends the run with an error when a candidate of
``matrix.required`` failed, after the leaderboard is written.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from cv_pipelines.config.parameters import EvaluationParams, MatrixParams, TrainingParams
from cv_pipelines.config.resolvers import project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.errors import ExportNotFoundError
from cv_pipelines.exports.versions import ExportRef, find_export
from cv_pipelines.files.run_folders import RunFolders
from cv_pipelines.models import candidate_runs
from cv_pipelines.models.evaluation import HEADLINE
from cv_pipelines.models.lineage import (
    log_export_input,
)
from cv_pipelines.models.matrix import candidate_parameters
from cv_pipelines.models.trainers import TrainedModel, load_trainer
from cv_pipelines.models.training import (
    DATA_FILE,
    DeviceUnavailableError,
    check_device,
    finish_run_folder,
    start_run_folder,
)

logger = logging.getLogger(__name__)


def _selected(name: str, matrix: MatrixParams) -> bool:
    return (not matrix.only or name in matrix.only) and name not in matrix.exclude


def train_candidate(
    name: str, export: ExportRef, runs: RunFolders, training: TrainingParams, matrix: MatrixParams
) -> dict:
    """Train candidate ``name`` on ``export`` in its own nested MLflow run, with retries."""
    result: dict[str, Any] = {"candidate": name, "status": "skipped", "attempts": 0, "run_id": None, "error": None}
    if not _selected(name, matrix):
        logger.info("Candidate %s: skipped (matrix.only / matrix.exclude)", name)
        return result
    # The trainers' interface takes plain mappings (a trainer may live outside this package).
    params = candidate_parameters(name, training.model_dump(), matrix.model_dump())
    spec = params.pop("trainer")
    trainer = load_trainer(spec)
    try:
        device = check_device(params["device"])
    except DeviceUnavailableError as exc:
        raise ConfigurationError(exc.naming(_device_key(name, matrix))) from None
    if params.get("export_version") is not None and int(params["export_version"]) != export.version:
        try:
            export = find_export(export.path.parent, export.info.get("label_set", ""), int(params["export_version"]))
        except ExportNotFoundError as exc:
            raise ConfigurationError(f"matrix.candidates.{name}.export_version: {exc}") from None
    parent_id = candidate_runs.parent_run_id()
    if parent_id is None:
        raise ConfigurationError(
            "the matrix pipeline needs MLflow tracking (each candidate is its own run); remove 'matrix' from "
            "tracking.disable_tracking.pipelines in conf/base/mlflow.yml"
        )
    result |= {"trainer": spec, "model": params["model"], "imgsz": params["imgsz"], "epochs": params["epochs"]}
    result["export"] = export.name
    attempts = 1 + matrix.retries
    for attempt in range(1, attempts + 1):
        result["attempts"] = attempt
        if _train_attempt(name, attempt, attempts, trainer, export, runs, params, device, parent_id, result):
            return result
    result["status"] = "failed"
    if matrix.fail_fast:
        raise ConfigurationError(f"matrix candidate {name} failed after {attempts} attempt(s): {result['error']}")
    return result


def _train_attempt(name, attempt, attempts, trainer, export, runs, params, device, parent_id, result) -> bool:
    """One attempt in a new folder and nested run; whether it trained (``result`` is updated either way)."""
    root = project_root()
    with candidate_runs.candidate_run(name, parent_id) as run_id:
        result["run_id"] = run_id
        record = {
            "mlflow_run_id": run_id,
            "candidate": name,
            "export_path": project_relative(export.path, root),
            **export.lineage(),
            "model": params["model"],
        }
        run_dir = start_run_folder(runs, run_id, export, record)
        candidate_runs.log_candidate_params(params)
        log_export_input(export, "training", {"cv_pipelines.run_dir": project_relative(run_dir, root)})
        try:
            trained = trainer.train(
                data_yaml=run_dir / DATA_FILE, run_dir=run_dir, params=params, device=device, project_root=root
            )
        except ConfigurationError:
            raise
        except Exception as exc:  # the candidate's own failure: retried, then reported
            result["error"] = f"{type(exc).__name__}: {exc}"
            logger.warning("Candidate %s, attempt %d of %d failed: %s", name, attempt, attempts, result["error"])
            candidate_runs.tag_failure(result["error"])
            trained = None
        else:
            candidate_runs.log_candidate_training(trained, run_dir)
            finish_run_folder(
                run_dir,
                {
                    "mlflow_run_id": run_id,
                    "candidate": name,
                    "epochs_done": trained.epochs_done,
                    "seconds": round(trained.seconds, 1),
                },
            )
            result |= {
                "status": "trained",
                "error": None,
                "run_dir": project_relative(run_dir, root),
                "weights": project_relative(trained.weights, root),
                "family": trained.family,
                "train_seconds": round(trained.seconds, 1),
                "data_yaml": project_relative(run_dir / DATA_FILE, root),
                "device": device,
            }
    if trained is None:
        candidate_runs.mark_failed(result["run_id"])
        return False
    return True


def evaluate_candidate(name: str, trained: dict[str, Any], evaluation: EvaluationParams) -> dict:
    """The candidate's test-split metrics, logged into its own run."""
    if trained["status"] != "trained":
        return dict(trained)
    root = project_root()
    trainer = load_trainer(trained["trainer"])
    model = TrainedModel(weights=root / trained["weights"], family=trained["family"], epochs_done=0, seconds=0.0)
    with candidate_runs.reopened_run(trained["run_id"]):
        metrics = trainer.evaluate(
            trained=model,
            data_yaml=root / trained["data_yaml"],
            split=evaluation.split,
            evaluation=evaluation.model_dump(),
            device=trained["device"],
            out_dir=root / trained["run_dir"] / f"evaluation_{evaluation.split}",
            project_root=root,
        )
        candidate_runs.log_candidate_metrics(metrics, evaluation.split, trained["run_id"])
    headline = {key: float(metrics[key]) for key in HEADLINE}
    logger.info("Candidate %s: %s", name, ", ".join(f"{k} {v:.3f}" for k, v in headline.items()))
    return {**trained, "status": "ok", "split": evaluation.split, **headline}


def rank_candidates(matrix: MatrixParams, *results: dict[str, Any]):
    """The leaderboard (table, plot) and the summary naming the candidate that goes forward."""
    rank_by = matrix.rank_by
    columns = [
        "rank",
        "candidate",
        "status",
        rank_by,
        *[m for m in HEADLINE if m != rank_by],
        "model",
        "imgsz",
        "epochs",
        "trainer",
        "train_seconds",
        "attempts",
        "run_id",
        "error",
    ]
    frame = pd.DataFrame(list(results))
    for column in columns:
        if column not in frame:
            frame[column] = None
    ok = frame["status"].eq("ok")
    frame["rank"] = pd.NA
    ranked = frame[ok].sort_values(rank_by, ascending=False, kind="stable")
    frame.loc[ranked.index, "rank"] = range(1, len(ranked) + 1)
    frame = pd.concat([frame.loc[ranked.index], frame[~ok]])[columns].reset_index(drop=True)
    for column in ("rank", "imgsz", "epochs", "attempts"):  # whole numbers, blank where not run
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    winner = frame.iloc[0].to_dict() if len(ranked) else None
    summary = {
        "matrix_id": candidate_runs.parent_run_id(),
        "rank_by": rank_by,
        "split": next((r.get("split") for r in results if r.get("split")), None),
        "winner": None
        if winner is None
        else {
            "candidate": winner["candidate"],
            "run_id": winner["run_id"],
            **{m: round(float(winner[m]), 5) for m in HEADLINE},
            "deploy_with": f"kedro run --pipelines evaluation,deployment --params evaluation.run_id={winner['run_id']}",
        },
        "candidates": {r["candidate"]: r["status"] for r in results},
        "failed": {r["candidate"]: r["error"] for r in results if r["status"] == "failed"},
    }
    if winner is not None:
        logger.info(
            "Matrix leaderboard: %s goes forward (%s %.3f); %d candidate(s) ranked",
            winner["candidate"],
            rank_by,
            winner[rank_by],
            len(ranked),
        )
    return frame, _leaderboard_figure(frame, rank_by), summary


def check_required(summary: dict[str, Any], matrix: MatrixParams) -> None:
    """Fail the run when a required candidate failed (the leaderboard is written by now)."""
    required = matrix.required
    failed = summary["failed"]
    names = list(failed) if required == "all" else [n for n in failed if n in (required or [])]
    if names:
        raise ConfigurationError(
            "required matrix candidate(s) failed: "
            + "; ".join(f"{n} ({failed[n]})" for n in names)
            + " — see data/reporting/matrix/leaderboard.csv"
        )


# --- helpers ------------------------------------------------------------------------------


def _device_key(name: str, matrix: MatrixParams) -> str:
    """The parameter that set candidate ``name``'s device: its own override, else the training's."""
    overrides = matrix.candidates.get(name) or {}
    return f"matrix.candidates.{name}.device" if "device" in overrides else "training.device"


def _leaderboard_figure(frame: pd.DataFrame, rank_by: str):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure registry to leak into

    figure = Figure(figsize=(7, 1.2 + 0.5 * max(len(frame), 1)))
    axes = figure.subplots()
    values = pd.to_numeric(frame[rank_by], errors="coerce").fillna(0.0)
    # The frame lists ranked candidates first, best first.
    colors = [
        "tab:green" if index == 0 and status == "ok" else ("tab:blue" if status == "ok" else "tab:red")
        for index, status in enumerate(frame["status"])
    ]
    axes.barh(range(len(frame)), values, color=colors)
    axes.set_yticks(
        range(len(frame)),
        [f"{c} ({s})" if s != "ok" else c for c, s in zip(frame["candidate"], frame["status"], strict=True)],
    )
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel(f"test {rank_by}")
    axes.set_title("Training matrix leaderboard (green: goes forward)")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure
