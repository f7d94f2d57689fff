"""A user-added trainer, as the README's example shows one: a subclass of the built-in one."""

from __future__ import annotations

import os
import shutil

from cv_pipelines.models.trainers import TrainedModel, UltralyticsTrainer


class FrozenBackboneTrainer(UltralyticsTrainer):
    """Freezes the first layers (an Ultralytics argument) and leaves a note in its run folder."""

    def train(self, *, params, run_dir, **kwargs):
        extra = {**(params.get("extra_args") or {}), "freeze": 3}
        trained = super().train(params={**params, "extra_args": extra}, run_dir=run_dir, **kwargs)
        (run_dir / "trained_by.txt").write_text(type(self).__name__, encoding="utf-8")
        return trained


class NotATrainer:
    """Lacks the interface: the matrix must refuse it with a sentence."""


class ReusedWeightsTrainer(UltralyticsTrainer):
    """Trains nothing: copies the weights named by ``CV_TEST_REUSED_WEIGHTS`` (a trained template's
    best.pt) into its run folder; its evaluation is the real one. For tests of which candidates
    run, where a training would prove nothing more."""

    def train(self, *, params, run_dir, **kwargs):
        weights = run_dir / "weights/best.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.environ["CV_TEST_REUSED_WEIGHTS"], weights)
        return TrainedModel(weights=weights, family="yolo", epochs_done=1, seconds=0.0)
