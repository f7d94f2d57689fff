"""Project hooks: stop configuration mistakes before any node runs; keep sessions' MLflow runs apart."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl


class ConfigCheckHooks:
    """Validate parameters, and the inputs a pipeline reads from earlier runs and services, before it starts."""

    @hook_impl
    def after_context_created(self, context) -> None:
        """Check every parameter against its schema."""
        from cv_pipelines.config.parameters import validate_parameters

        validate_parameters(context.params)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Let each input that can tell (a model to evaluate, the CVAT server) say what is missing."""
        if catalog is not None:
            _check_earlier_outputs(pipeline, catalog)


def _check_earlier_outputs(pipeline, catalog) -> None:
    """Let each input a pipeline reads from outside it say what to run or configure first.

    Datasets that can tell (``check_loadable``: the trained model of evaluation, the
    export of training, the CVAT connection of labeling) raise their one-sentence
    ``ConfigurationError`` before any node runs; Kedro itself would report the failed
    load only once a node needs it, wrapped in a traceback.
    """
    for name in sorted(pipeline.inputs()):
        if name == "parameters" or name.startswith("params:"):
            continue
        check = getattr(catalog.get(name), "check_loadable", None)
        if check is not None:
            check()


class MlflowSessionIsolationHooks:
    """Keep one Kedro session's MLflow run out of the next session of the same process.

    kedro-mlflow 2.0.3's hook is a process-wide singleton that remembers the last run
    id and re-opens it before every node, also in sessions whose pipeline has tracking
    disabled. In one process running several sessions (the main job, a notebook, the
    tests) that logs into a finished run of another session, or fails when that run
    lives in another store. Forgetting the id when a session starts fixes both.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        """A new session starts with no remembered run."""
        _forget_kedro_mlflow_run()

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        """The session's run is over: forget it."""
        _forget_kedro_mlflow_run()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        """The session's run failed: forget it as well."""
        _forget_kedro_mlflow_run()


def _forget_kedro_mlflow_run() -> None:
    import sys

    module = sys.modules.get("kedro_mlflow.framework.hooks.mlflow_hook")
    hook = getattr(module, "mlflow_hook", None) if module else None
    if hook is not None and hasattr(hook, "run_id"):
        hook.run_id = None
