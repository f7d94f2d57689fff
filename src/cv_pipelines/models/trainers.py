"""Trainers the training matrix runs: Ultralytics (YOLO and RT-DETR) built in, yours by import path.

A candidate of ``matrix.candidates`` names its trainer with ``trainer:`` —
``ultralytics`` (the default) or ``package.module:ClassName`` for one of your own. A
trainer is any class with the two methods of ``Trainer``; it is constructed with no
arguments. For example, a trainer that fine-tunes with a frozen backbone::

    # my_project/trainers.py
    from cv_pipelines.models.trainers import UltralyticsTrainer

    class FrozenBackboneTrainer(UltralyticsTrainer):
        def train(self, *, params, **kwargs):
            extra = {**params.get("extra_args", {}), "freeze": 10}
            return super().train(params={**params, "extra_args": extra}, **kwargs)

    # conf/base/parameters_matrix.yml
    #   matrix:
    #     candidates:
    #       frozen: {trainer: "my_project.trainers:FrozenBackboneTrainer", model: runs/best.pt}

Heavy imports stay inside the methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cv_pipelines.errors import ConfigurationError


@dataclass
class TrainedModel:
    """What a trainer hands to evaluation and to MLflow."""

    weights: Path
    family: str  # which loader reads ``weights``: "yolo", "rtdetr", or the trainer's own word
    epochs_done: int
    seconds: float
    #: Per-epoch metrics, ``{name: [{"value": v, "step": epoch}]}`` (MLflow names: no parentheses).
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)


@runtime_checkable
class Trainer(Protocol):
    """The interface of a trainer: train into a folder, then evaluate what it trained."""

    def train(
        self, *, data_yaml: Path, run_dir: Path, params: Mapping[str, Any], device: str, project_root: Path
    ) -> TrainedModel:
        """Train on the YOLO data set ``data_yaml`` into the empty folder ``run_dir``.

        ``params`` are the candidate's training parameters (those of
        ``parameters_training.yml`` with the candidate's overrides applied).
        """

    def evaluate(
        self,
        *,
        trained: TrainedModel,
        data_yaml: Path,
        split: str,
        evaluation: Mapping[str, Any],
        device: str,
        out_dir: Path,
        project_root: Path,
    ) -> dict[str, float]:
        """Metrics on ``split``: at least ``mAP50``, ``mAP50-95``, ``precision``, ``recall``."""


class UltralyticsTrainer:
    """YOLO (v8 to 11 and later, any model YAML or .pt) and RT-DETR through Ultralytics."""

    def train(
        self, *, data_yaml: Path, run_dir: Path, params: Mapping[str, Any], device: str, project_root: Path
    ) -> TrainedModel:
        """Ultralytics training of ``params["model"]`` (a local ``.pt`` is resolved in the project) into ``run_dir``.

        Returns ``best.pt``, the family that reads it, the epochs done and the per-epoch
        metrics Ultralytics reported as each epoch ended.
        """
        from cv_pipelines.config.resolvers import in_project
        from cv_pipelines.models.training import model_family, train_yolo

        history: dict[str, list[dict[str, float]]] = {}

        def keep_epoch(epoch: int, metrics: dict[str, float]) -> None:
            for name, value in metrics.items():
                history.setdefault(name, []).append({"value": value, "step": epoch})

        model = str(params["model"])
        if model.endswith(".pt"):
            model = str(in_project(project_root, model))
        result = train_yolo(
            model=model,
            data_yaml=data_yaml,
            run_dir=run_dir,
            epochs=params["epochs"],
            imgsz=params["imgsz"],
            batch=params["batch"],
            device=device,
            seed=params["seed"],
            patience=params["patience"],
            workers=params["workers"],
            extra_args=params.get("extra_args") or {},
            project_root=project_root,
            on_epoch_end=keep_epoch,
        )
        return TrainedModel(
            weights=result.best,
            family=model_family(model),
            epochs_done=result.epochs_done,
            seconds=result.seconds,
            history=history,
        )

    def evaluate(
        self,
        *,
        trained: TrainedModel,
        data_yaml: Path,
        split: str,
        evaluation: Mapping[str, Any],
        device: str,
        out_dir: Path,
        project_root: Path,
    ) -> dict[str, float]:
        """The headline metrics of ``trained`` on ``split``, plus ``AP50/<class>`` for each class with instances."""
        from cv_pipelines.models.evaluation import evaluate_weights

        result = evaluate_weights(
            trained.weights,
            data_yaml,
            split=split,
            conf=evaluation["conf"],
            iou=evaluation["iou"],
            device=device,
            batch=evaluation["batch"],
            out_dir=out_dir,
            family=trained.family,
            project_root=project_root,
        )
        per_class = {
            f"AP50/{row['class']}": float(row["mAP50"])
            for row in result.per_class.to_dict("records")
            if row["instances"]
        }
        return {**result.metrics, **per_class}


BUILT_IN = {"ultralytics": UltralyticsTrainer}


def load_trainer(spec: str) -> Trainer:
    """The trainer named ``spec``: a built-in name or ``package.module:ClassName``."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]()
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise ConfigurationError(
            f"trainer {spec!r} is neither built in ({', '.join(BUILT_IN)}) nor 'package.module:ClassName'"
        )
    try:
        trainer = getattr(importlib.import_module(module_name), class_name)()
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"trainer {spec!r} cannot be loaded: {exc}") from None
    if not isinstance(trainer, Trainer):
        raise ConfigurationError(
            f"trainer {spec!r} lacks train() or evaluate(); see cv_pipelines.models.trainers.Trainer"
        )
    return trainer
