"""Project settings: https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from pathlib import Path

from kedro.config import OmegaConfigLoader

from cv_pipelines.config.console import ProgressHooks
from cv_pipelines.config.loader import PROJECT_CONFIG_LOADER_ARGS
from cv_pipelines.config.log_redaction import keep_credentials_out_of_hook_traces
from cv_pipelines.config.mlflow_plugin import defer_kedro_mlflow_cli
from cv_pipelines.config.offline import apply_offline_defaults
from cv_pipelines.datasets.catalog import ProjectDataCatalog
from cv_pipelines.engines.dask_runner import RunEnvironmentHook
from cv_pipelines.hooks import ConfigCheckHooks, project_mlflow_hook

# Importing settings is the first thing every Kedro command does with the project, so
# this is where telemetry goes off and Ultralytics' settings move into the project.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
apply_offline_defaults(PROJECT_ROOT)
# Kedro's hook traces (at DEBUG) would print every credential in plain text.
keep_credentials_out_of_hook_traces()
# Kedro loads the plugins' commands after this module: kedro-mlflow's is loaded only when
# `kedro mlflow ...` is used, not at every start-up (it imports MLflow, 1.4 s).
defer_kedro_mlflow_cli()

# Hooks registered later run earlier: the checks run before kedro-mlflow opens a run, so
# a pipeline they stop leaves no open MLflow run behind; the progress display opens last,
# once the run is sure to start.
# RunEnvironmentHook hands the DaskRunner the run's --env (Kedro gives runners none).
HOOKS = (ProgressHooks(), project_mlflow_hook, ConfigCheckHooks(), RunEnvironmentHook())
# kedro-viz brings kedro-telemetry along; its session hooks never run in this project.
# kedro-mlflow's own hook instance is replaced by the project's wrapper of it (see hooks.py).
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry", "kedro_mlflow", "kedro-mlflow")  # either spelling of the wheel

CONFIG_LOADER_CLASS = OmegaConfigLoader
# One-sentence errors raised inside datasets reach the command line as sentences.
DATA_CATALOG_CLASS = ProjectDataCatalog
CONFIG_LOADER_ARGS = PROJECT_CONFIG_LOADER_ARGS
