"""The quality gate: whether an evaluated model may become ``champion``, and one sentence saying why (not)."""

from __future__ import annotations

from typing import Any

from cv_pipelines.config.parameters import DeploymentParams


def gate_decision(summary: dict[str, Any], champion, deployment: DeploymentParams) -> tuple[bool, str]:
    """Whether the evaluated model may become champion, and one sentence saying why (not).

    The floor (``champion_floor``) holds for every model; a current champion must also
    have been measured in the same evaluation (the summary's ``champion`` is that
    version), and none of ``gate_metrics`` may be more than ``tolerance`` below it.
    """
    split = summary.get("split")
    metrics = summary.get("metrics") or {}
    below = [
        f"{metric} {metrics.get(metric, float('nan')):.4f} < {floor:g}"
        for metric, floor in deployment.champion_floor.items()
        if not metrics.get(metric, float("-inf")) >= floor
    ]
    if below:
        return False, f"its {split} metrics are below deployment.champion_floor ({'; '.join(below)})"
    if split != "test":
        return False, f"it was evaluated on the {split} split, and the gate compares test-split metrics only"
    if champion is None:
        shown = ", ".join(f"{metric} {metrics.get(metric, float('nan')):.4f}" for metric in deployment.champion_floor)
        return True, f"first champion, its test metrics pass deployment.champion_floor ({shown})"
    compared = summary.get("champion") or {}
    if str(compared.get("version")) != str(champion.version):
        evaluated_against = f"version {compared['version']}" if compared else "no champion"
        return False, (
            f"it was evaluated against {evaluated_against}, not the current champion version {champion.version}; "
            "run the evaluation again, then the deployment"
        )
    differences = compared.get("differences") or {}
    tolerance = deployment.tolerance
    worse = [
        f"{metric} {metrics[metric]:.4f} vs {compared['metrics'][metric]:.4f}"
        for metric in deployment.gate_metrics
        if differences.get(metric, float("-inf")) < -tolerance
    ]
    if worse:
        return False, (
            f"it is worse than champion version {champion.version} on the test split by more than the tolerance "
            f"{tolerance:g} ({'; '.join(worse)})"
        )
    shown = ", ".join(f"{metric} {differences[metric]:+.4f}" for metric in deployment.gate_metrics)
    return (
        True,
        f"no worse than champion version {champion.version} on the test split ({shown}, tolerance {tolerance:g})",
    )
