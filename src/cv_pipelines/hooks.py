"""Project hooks: stop configuration mistakes before any node runs."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl


class ConfigCheckHooks:
    """Validate parameters and the credentials a pipeline needs, before it starts."""

    def __init__(self) -> None:
        self._credentials: dict[str, Any] = {}
        self._params: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        """Check every parameter against its schema, and read the credentials once."""
        from cv_pipelines.config.parameters import validate_parameters

        validate_parameters(context.params)
        self._params = context.params
        try:
            self._credentials = context.config_loader["credentials"] or {}
        except Exception:  # no conf/local/credentials.yml is a normal state
            self._credentials = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Resolve CVAT for pipelines that talk to it; let inputs from earlier runs say what is missing."""
        if any("cvat" in node.tags for node in pipeline.nodes):
            from cv_pipelines.labeling.cvat_connection import resolve_cvat_connection

            connection = resolve_cvat_connection(self._credentials.get("cvat"))
            if catalog is not None and "cvat_connection" in pipeline.inputs():
                # A memory dataset, never a file: the secret stays in this process.
                catalog["cvat_connection"] = connection
        if catalog is not None:
            _check_earlier_outputs(pipeline, catalog)


def _check_earlier_outputs(pipeline, catalog) -> None:
    """Let each input a pipeline reads from earlier runs say what to run first, before any node runs.

    Datasets that can tell (``check_loadable``, e.g. the trained model of evaluation)
    raise their one-sentence ``ConfigurationError``; Kedro itself would report the
    failed load only once a node needs it, wrapped in a traceback.
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
