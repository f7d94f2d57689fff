"""A user-added trainer, as the README's example shows one: a subclass of the built-in one."""

from __future__ import annotations

from cv_pipelines.models.trainers import UltralyticsTrainer


class FrozenBackboneTrainer(UltralyticsTrainer):
    """Freezes the first layers (an Ultralytics argument) and leaves a note in its run folder."""

    def train(self, *, params, run_dir, **kwargs):
        extra = {**(params.get("extra_args") or {}), "freeze": 3}
        trained = super().train(params={**params, "extra_args": extra}, run_dir=run_dir, **kwargs)
        (run_dir / "trained_by.txt").write_text(type(self).__name__, encoding="utf-8")
        return trained


class NotATrainer:
    """Lacks the interface: the matrix must refuse it with a sentence."""
