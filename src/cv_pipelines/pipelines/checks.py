"""Nodes that check their input before the pipeline starts, as well as when they run.

A node function marked :func:`checks_before_run` is called once more by the project's
hooks (``hooks.ConfigCheckHooks.before_pipeline_run``) before the run starts, when every
one of its inputs comes from outside the pipeline: a refusal then stops the command
before anything is written, kedro-mlflow's run of the session included. Only for nodes
whose work is a cheap read and a check (the COCO import's first node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute that marks a node function.
CHECKS_BEFORE_RUN = "checks_before_run"


def checks_before_run(func: F) -> F:
    """Mark ``func`` (a node function with a list of inputs) to be called before the run too."""
    setattr(func, CHECKS_BEFORE_RUN, True)
    return func
