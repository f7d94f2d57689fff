"""Project hooks: stop configuration mistakes before any node runs."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl


class ConfigCheckHooks:
    """Validate parameters and the credentials a pipeline needs, before it starts."""

    def __init__(self) -> None:
        self._credentials: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        from cv_pipelines.parameters import validate_parameters

        validate_parameters(context.params)
        try:
            self._credentials = context.config_loader["credentials"] or {}
        except Exception:  # no conf/local/credentials.yml is a normal state
            self._credentials = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if any("cvat" in node.tags for node in pipeline.nodes):
            from cv_pipelines.cvat_connection import resolve_cvat_connection

            connection = resolve_cvat_connection(self._credentials.get("cvat"))
            if catalog is not None and "cvat_connection" in pipeline.inputs():
                # A memory dataset, never a file: the secret stays in this process.
                catalog["cvat_connection"] = connection
