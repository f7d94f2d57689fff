"""kedro-mlflow, loaded only where it is used: its ``kedro mlflow`` commands and the pipelines it tracks.

Importing MLflow costs about 1.4 s and opening its store about 1 s more (measured with
``python -X importtime``); kedro-mlflow did both at every ``kedro`` start-up:

- **Its command line.** Kedro loads every ``kedro.project_commands`` entry point before it
  parses the command, and kedro-mlflow's (``kedro_mlflow.framework.cli.cli:commands``)
  imports MLflow at the top of its module. ``settings.py`` runs first (Kedro imports it
  while bootstrapping the project, before it loads the plugins' commands), and there
  :func:`defer_kedro_mlflow_cli` puts a stand-in under that module's name: the same
  ``Mlflow`` group holding the same ``mlflow`` group, whose subcommands are read from
  the real module, imported the moment ``kedro mlflow ...`` (or its help) needs them.
  Any other attribute read from the stand-in is the real module's too.
- **Its hook.** See ``hooks.ProjectMlflowHook``: a ``kedro run`` of pipelines whose tracking
  ``mlflow.yml`` disables never loads kedro-mlflow.

Nothing in site-packages is changed; with kedro-mlflow's module already imported (a
test that imported it first), the stand-in is not installed and nothing changes.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import click

#: kedro-mlflow's CLI module, as its ``kedro.project_commands`` entry point names it.
KEDRO_MLFLOW_CLI = "kedro_mlflow.framework.cli.cli"
#: Its ``Mlflow`` group's help and the ``mlflow`` group's (kedro-mlflow 2.0.3), shown by ``kedro --help``.
_GROUP_HELP = "Kedro plugin for interactions with mlflow."
_MLFLOW_HELP = "Use mlflow-specific commands inside kedro project."


class _CliStandIn(types.ModuleType):
    """Stands in for kedro-mlflow's CLI module until something needs more than its ``commands`` group."""

    def __getattr__(self, name: str) -> Any:
        # Module attributes it does not have (``__file__``, read by ``inspect.getmodule`` over
        # every module whenever something takes a stack) are not a reason to import it.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(real_kedro_mlflow_cli(), name)


def real_kedro_mlflow_cli() -> types.ModuleType:
    """kedro-mlflow's CLI module itself, imported on first call (it imports MLflow); the stand-in gives way to it."""
    module = sys.modules.get(KEDRO_MLFLOW_CLI)
    if module is not None and not isinstance(module, _CliStandIn):
        return module
    if module is not None:
        del sys.modules[KEDRO_MLFLOW_CLI]
    try:
        return importlib.import_module(KEDRO_MLFLOW_CLI)
    except BaseException:
        if module is not None and KEDRO_MLFLOW_CLI not in sys.modules:
            sys.modules[KEDRO_MLFLOW_CLI] = module
        raise


class _DeferredMlflowGroup(click.Group):
    """``kedro mlflow``: listed with its help at no cost; its subcommands are kedro-mlflow's own, loaded when asked for."""

    def _real(self) -> click.Group:
        group = real_kedro_mlflow_cli().commands.commands["mlflow"]
        assert isinstance(group, click.Group)
        return group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self._real().list_commands(ctx))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._real().get_command(ctx, cmd_name)


def defer_kedro_mlflow_cli() -> None:
    """Put the stand-in under kedro-mlflow's CLI module name, unless that module is already imported."""
    if KEDRO_MLFLOW_CLI in sys.modules:
        return
    stand_in = _CliStandIn(KEDRO_MLFLOW_CLI, "kedro-mlflow's CLI, imported when `kedro mlflow` is used")
    commands = click.Group(name="Mlflow", help=_GROUP_HELP)
    commands.add_command(_DeferredMlflowGroup(name="mlflow", help=_MLFLOW_HELP))
    stand_in.commands = commands  # type: ignore[attr-defined]
    sys.modules[KEDRO_MLFLOW_CLI] = stand_in


def _random_name() -> str:
    from kedro_mlflow.config.resolvers import resolve_random_name  # imports mlflow

    return str(resolve_random_name())


def register_mlflow_resolvers() -> None:
    """kedro-mlflow's ``km.random_name`` resolver for mlflow.yml, importing MLflow only if a value uses it.

    kedro-mlflow registers it only when no resolver of that name exists, so the value is
    the same whichever registered it first.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("km.random_name"):
        OmegaConf.register_new_resolver("km.random_name", _random_name, use_cache=True)


def mlflow_config(context: Any) -> dict[str, Any] | None:
    """The project's mlflow.yml as kedro-mlflow reads it (its resolver, its config patterns); None without one."""
    return mlflow_config_of(context.config_loader)


def mlflow_config_of(loader: Any) -> dict[str, Any] | None:
    """mlflow.yml as ``loader`` (a session's, or one made outside a session) resolves it; None without one."""
    from kedro.config import MissingConfigException

    register_mlflow_resolvers()
    if "mlflow" not in loader.config_patterns:  # as kedro-mlflow adds it
        loader.config_patterns.update({"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]})
    try:
        return dict(loader["mlflow"])
    except MissingConfigException:
        return None


def untracked_pipelines(config: dict[str, Any] | None) -> set[str]:
    """The pipelines mlflow.yml's ``tracking.disable_tracking.pipelines`` lists (kedro-mlflow's default: none)."""
    tracking = (config or {}).get("tracking") or {}
    return set((tracking.get("disable_tracking") or {}).get("pipelines") or [])


def cli_run_pipelines() -> list[str] | None:
    """The pipelines the ``run`` command being executed names (``__default__`` when none); None outside one.

    ``kedro run`` and ``python -m cv_pipelines`` run the session inside Click's context of
    the ``run`` command, so its options are known before the session's first hook.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name != "run" or not {"pipeline", "pipelines"} <= ctx.params.keys():
        return None
    named = [ctx.params["pipeline"]] if ctx.params["pipeline"] else list(ctx.params["pipelines"] or [])
    return named or ["__default__"]
