"""Project settings: https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from pathlib import Path

from kedro.config import OmegaConfigLoader

from cv_pipelines.config_resolvers import CUSTOM_RESOLVERS
from cv_pipelines.hooks import ConfigCheckHooks, MlflowSessionIsolationHooks
from cv_pipelines.offline import apply_offline_defaults

# Importing settings is the first thing every Kedro command does with the project, so
# this is where telemetry goes off and Ultralytics' settings move into the project.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
apply_offline_defaults(PROJECT_ROOT)

HOOKS = (ConfigCheckHooks(), MlflowSessionIsolationHooks())
# kedro-viz brings kedro-telemetry along; its session hooks never run in this project.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry",)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": CUSTOM_RESOLVERS,
    # conf/<env>/ overrides single keys of conf/base/, not whole top-level groups.
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "globals": ["globals.yml"],
    },
}
