"""Project hooks: stop configuration mistakes before any node runs; kedro-mlflow's tracking, fitted to the project."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from pydantic import BaseModel


class ConfigCheckHooks:
    """Validate parameters, and the inputs a pipeline reads from earlier runs and services, before it starts."""

    # First among the after_context_created hooks: the first read of ``context.params``
    # makes Kedro build the nodes' typed parameters (the models of ``config.parameters``),
    # and its own message lists every failure of every model at length.
    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        """Check every parameter against its schema: one sentence per mistake, naming the key and the file."""
        from cv_pipelines.config.parameters import validate_parameters

        validate_parameters(context.config_loader["parameters"])

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Let each input that can tell (a model to evaluate, the CVAT server) say what is missing, then check nodes.

        Runs before kedro-mlflow's hook opens the session's run (registered after it), so
        a refusal here leaves no MLflow run behind.
        """
        if catalog is not None:
            _check_earlier_outputs(pipeline, catalog)
            _check_nodes_before_run(pipeline, catalog)


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


def _check_nodes_before_run(pipeline, catalog) -> None:
    """Call each node marked ``checks_before_run`` (``pipelines/checks.py``) whose inputs all come from outside.

    Its one-sentence refusal (a COCO file with categories outside the label set) then
    stops the command before anything is written; it runs again as part of the pipeline.
    """
    from cv_pipelines.pipelines.checks import CHECKS_BEFORE_RUN

    outside = pipeline.inputs()
    for node in pipeline.nodes:
        if getattr(node.func, CHECKS_BEFORE_RUN, False) and set(node.inputs) <= outside:
            node.func(*(catalog.load(name) for name in node.inputs))


class ProjectMlflowHook:
    """kedro-mlflow's hook, with the three things this project needs of it and it does not do.

    - **Typed parameters are logged by key.** Kedro hands each node its ``params:<section>``
      as the section's pydantic model; kedro-mlflow flattens only dicts, so it would log
      ``training`` as one long string instead of ``training.epochs``, ``training.seed``...
      The models are dumped to dicts for the logging, and only for it.
    - **One session's run stays out of the next.** kedro-mlflow's hook remembers the
      last run id and re-opens it before every node, also in sessions whose pipeline has
      tracking disabled. In one process running several sessions (the main job, a
      notebook, the tests) that logs into a finished run of another session, or fails
      when that run lives in another store. The id is forgotten when a session starts
      and when its run ends.
    - **An untracked ``kedro run`` never loads MLflow.** When the command line's ``run``
      names only pipelines that mlflow.yml's ``tracking.disable_tracking.pipelines``
      lists, kedro-mlflow (and MLflow, 2.5 s of imports and store set-up) is not loaded:
      for such a pipeline it would log nothing and only switch off the logging of its
      Mlflow datasets. Its calls are held back; once the catalog exists, pipelines that
      read or write a kedro-mlflow dataset get them replayed in Kedro's order (context,
      catalog), before the project's checks and the run start, as before; so does a run
      whose pipelines turn out not to be the ones the command line named. Sessions
      started any other way (the API, ``kedro ipython``, notebooks) set kedro-mlflow up
      when their context is created, as before (``context.mlflow``...).

    It holds kedro-mlflow's ``MlflowHook`` and hands it every call, rather than
    subclassing it: kedro-mlflow imports MLflow, which no module of the package may
    import at load time (the CLI and kedro-viz start without it). Registered in
    ``settings.HOOKS`` in place of the plugin's own instance. pluggy registers a plugin
    under its ``__name__`` and loads no entry point whose name is taken, so this one is
    named after kedro-mlflow's ``kedro.hooks`` entry point (``mlflow_hook``): Kedro's
    hook manager never imports that module (settings.DISABLE_HOOKS_FOR_PLUGINS would
    only unregister it once imported).
    """

    #: kedro-mlflow's ``kedro.hooks`` entry point name, taken so that pluggy does not load it.
    ENTRY_POINT_NAME = "mlflow_hook"

    def __init__(self) -> None:
        self.__name__ = self.ENTRY_POINT_NAME
        self._hook: Any = None
        #: The session's context and catalog hooks' arguments, while kedro-mlflow is held back.
        self._held: dict[str, Any] | None = None
        #: True while a session runs without kedro-mlflow (an untracked pipeline).
        self._skipped = False

    @property
    def kedro_mlflow(self) -> Any:
        """kedro-mlflow's hook, created on first use."""
        if self._hook is None:
            import warnings

            from cv_pipelines.config.console import restore_logger_level

            # kedro-mlflow's own KedroPipelineModel (which this project does not use) has
            # an untyped predict, and MLflow warns when the class is defined; the project's
            # packaged model is typed, so that warning never concerns it. MLflow forces
            # UserWarnings to show there ("once"), so a filter cannot hide it: the import's
            # warnings are caught, and all the others shown again.
            with warnings.catch_warnings(record=True) as caught:
                from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook  # imports mlflow
            for warning in caught:
                if "Add type hints to the `predict` method" not in str(warning.message):
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            # Importing kedro_mlflow sets its logger to INFO, over conf/logging.yml's level.
            restore_logger_level("kedro_mlflow")
            self._hook = MlflowHook()
        return self._hook

    @property
    def run_id(self) -> str | None:
        """The MLflow run of the session now running (also seen from the runner's worker threads)."""
        return getattr(self._hook, "run_id", None)

    @hook_impl
    def after_context_created(self, context) -> None:
        """A new session starts with no remembered run; kedro-mlflow reads its configuration and opens the store.

        Held back when the command line runs only untracked pipelines (see the class).
        Opening an embedded SQLite store that does not exist yet creates and migrates it,
        then creates the experiment: two first runs at once on a fresh clone would both
        migrate (alembic's "duplicate column name") or both create the experiment. Only
        one process at a time sets MLflow up; the next finds the store ready.
        """
        from cv_pipelines.config.mlflow_plugin import cli_run_pipelines, mlflow_config, untracked_pipelines

        self._held, self._skipped = None, False
        named = cli_run_pipelines()
        if named is not None:
            untracked = untracked_pipelines(mlflow_config(context))
            if set(named) <= untracked:
                self._held = {"context": context, "named": named, "untracked": untracked}
                return
        self._set_up(context)

    def _set_up(self, context) -> None:
        self.kedro_mlflow.run_id = None
        # mlflow.yml is read here before kedro-mlflow reads it, as it reads it.
        uri = _tracking_uri(context)
        _check_tracking_server(uri)
        with _mlflow_setup_lock(context, uri):
            self.kedro_mlflow.after_context_created(context=context)

    def _replay(self) -> None:
        """kedro-mlflow's hooks held back so far, in Kedro's order: it takes over the session."""
        held, self._held = self._held or {}, None
        self._set_up(held["context"])
        if "catalog" in held:
            self.kedro_mlflow.after_catalog_created(**held["catalog"])

    @hook_impl
    def after_catalog_created(self, catalog, conf_catalog, conf_creds, parameters, save_version, load_versions) -> None:
        """kedro-mlflow names its metric datasets after their catalog entries."""
        arguments = {
            "catalog": catalog,
            "conf_catalog": conf_catalog,
            "conf_creds": conf_creds,
            "parameters": parameters,
            "save_version": save_version,
            "load_versions": load_versions,
        }
        if self._held is not None:
            self._held["catalog"] = arguments
            if _has_kedro_mlflow_datasets(self._held["named"], catalog):
                self._replay()
            return
        self.kedro_mlflow.after_catalog_created(**arguments)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """kedro-mlflow opens the session's run (unless the pipeline's tracking is disabled)."""
        if self._held is not None:
            # kedro-mlflow's own test (``_assert_mlflow_enabled``): every pipeline run is untracked.
            if set(run_params.get("pipeline_names") or ["__default__"]) <= self._held["untracked"]:
                self._held, self._skipped = None, True
                return
            self._replay()
        self.kedro_mlflow.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)

    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async: bool) -> None:
        """kedro-mlflow logs the node's parameters, typed ones handed over as dicts."""
        if self._skipped:
            return
        plain = {
            name: value.model_dump(mode="json")
            if name.startswith("params:") and isinstance(value, BaseModel)
            else value
            for name, value in inputs.items()
        }
        self.kedro_mlflow.before_node_run(node=node, catalog=catalog, inputs=plain, is_async=is_async)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """The session's run is over: kedro-mlflow ends it, and it is forgotten."""
        if self._end_skipped():
            return
        self.kedro_mlflow.after_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
        self.kedro_mlflow.run_id = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        """The session's run failed: kedro-mlflow ends it, and it is forgotten as well."""
        if self._end_skipped():
            return
        self.kedro_mlflow.on_pipeline_error(error=error, run_params=run_params, pipeline=pipeline, catalog=catalog)
        self.kedro_mlflow.run_id = None

    def _end_skipped(self) -> bool:
        """Whether the session ending ran without kedro-mlflow (forgotten either way)."""
        skipped, self._skipped, self._held = self._skipped, False, None
        return skipped


def _has_kedro_mlflow_datasets(pipeline_names: list[str], catalog) -> bool:
    """Whether the named pipelines read or write a kedro-mlflow (``Mlflow*``) dataset, or one is not registered.

    For an untracked pipeline, kedro-mlflow switches such datasets' logging off and back on.
    The types are read from the catalog's configuration: no dataset is created.
    """
    from kedro.framework.project import pipelines

    for name in pipeline_names:
        pipeline = pipelines.get(name)
        if pipeline is None:
            return True
        for dataset in pipeline.datasets():
            if (catalog.get_type(dataset) or "").rpartition(".")[2].startswith("Mlflow"):
                return True
    return False


#: How long a session waits for another one to finish creating the MLflow store.
MLFLOW_SETUP_TIMEOUT_S = 300.0
_SQLITE = "sqlite:///"


def _tracking_uri(context) -> str | None:
    from cv_pipelines.config.mlflow_plugin import mlflow_config

    uri = ((mlflow_config(context) or {}).get("server") or {}).get("mlflow_tracking_uri")
    return str(uri or os.environ.get("MLFLOW_TRACKING_URI") or "") or None


def _check_tracking_server(uri: str | None) -> None:
    """A tracking server that does not answer stops the session at once, with one sentence.

    Without this, kedro-mlflow's set-up retries the server for minutes and ends in a traceback.
    """
    import urllib.error
    import urllib.request

    from cv_pipelines.errors import ExternalServiceError

    if not uri or not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10):
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:  # it answers (an auth proxy, another path): MLflow's own error will say more
            return
        reason = f"HTTP {exc.code}"
    except OSError as exc:
        reason = str(getattr(exc, "reason", None) or exc)
    raise ExternalServiceError(
        f"The MLflow tracking server {uri} does not answer ({reason}), so nothing ran and no MLflow run was "
        "opened; start it (make stack-up, for the team set-up on loopback) or point the environment's "
        "mlflow_server (conf/<env>/globals.yml) or MLFLOW_TRACKING_URI at one that runs, then run again."
    )


def _mlflow_setup_lock(context, uri: str | None) -> AbstractContextManager[None]:
    """The lock file next to the embedded SQLite store (``<db>.setup.lock``); no lock for a tracking server."""
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.files.locks import hold_lock

    if not uri or not str(uri).startswith(_SQLITE):
        return nullcontext()
    db = Path(str(uri).removeprefix(_SQLITE))
    db = db if db.is_absolute() else Path(context.project_path) / db
    db.parent.mkdir(parents=True, exist_ok=True)

    def busy(path: Path, timeout: float) -> ConfigurationError:
        return ConfigurationError(
            f"another kedro command has been setting up the MLflow store {db} for more than {timeout:.0f} s; "
            "run again once it is done."
        )

    return hold_lock(db.with_name(db.name + ".setup.lock"), timeout_s=MLFLOW_SETUP_TIMEOUT_S, busy=busy)


#: The one instance: kedro-mlflow's hook keeps the session's run between hooks and threads.
project_mlflow_hook = ProjectMlflowHook()
