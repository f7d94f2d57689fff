"""How the project reads ``conf/``: the config loader's arguments, shared by settings and tools.

``settings.py`` hands these to Kedro; code that runs outside a Kedro session (the main
job, the serving command, the matrix's list command) reads parameters with the same
arguments, so both see the same configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

from cv_pipelines.config.resolvers import CUSTOM_RESOLVERS, project_root

PROJECT_CONFIG_LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": CUSTOM_RESOLVERS,
    # conf/<env>/ overrides single keys of conf/base/, not whole top-level groups.
    "merge_strategy": {"parameters": "soft", "catalog": "soft", "compute": "soft", "dask": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "globals": ["globals.yml"],
        # `kedro airflow create`'s DAG settings (conf/base/airflow.yml), as kedro-airflow reads them.
        "airflow": ["airflow*", "airflow/**"],
        # Where trainings run away from this process (conf/base/compute.yml), for the jobs command.
        "compute": ["compute*", "compute/**"],
        # Where the DaskRunner's nodes run (conf/base/dask.yml).
        "dask": ["dask*", "dask/**"],
    },
}


def project_parameters(env: str | None = None, runtime_params: dict | None = None, root: Path | None = None) -> dict:
    """The parameters a ``kedro run --env <env> --params ...`` would see, without a session.

    For code that runs before or outside a Kedro session (the main job's decisions, the
    serving command, the matrix's registration and list command): the project's own
    config loader and settings, no hooks, no kedro-mlflow start-up.
    """
    root = root or project_root()
    loader = OmegaConfigLoader(
        conf_source=str(root / "conf"), env=env, runtime_params=runtime_params or {}, **PROJECT_CONFIG_LOADER_ARGS
    )
    return dict(loader["parameters"])


def project_config(name: str, env: str | None = None, root: Path | None = None) -> dict:
    """One configuration group of ``conf/`` (``compute``, ``airflow``...) as ``--env <env>`` reads it."""
    root = root or project_root()
    loader = OmegaConfigLoader(conf_source=str(root / "conf"), env=env, **PROJECT_CONFIG_LOADER_ARGS)
    return dict(loader[name])


def project_credentials(env: str | None = None, root: Path | None = None) -> dict:
    """``credentials.yml`` as a run would see it (conf/base, then conf/<env>), for code outside a session.

    Its values are secrets: callers take the one entry they need and never log it.
    """
    root = root or project_root()
    loader = OmegaConfigLoader(conf_source=str(root / "conf"), env=env, **PROJECT_CONFIG_LOADER_ARGS)
    return dict(loader["credentials"])


def section_parameters(section: str, *, env: str | None = None, root: Path | None = None, **overrides: Any) -> Any:
    """The validated model of one parameters section (``ingestion``, ``training``...), as a run would get it.

    ``overrides`` replace single keys of the section, like ``--params <section>.<key>=...``:
    for scripts, benchmarks and tests that call the library with the project's defaults.
    A value the section's model refuses raises ``ParameterError``, the run's sentence.
    """
    from pydantic import ValidationError

    # pydantic models: only for callers that need them
    from cv_pipelines.config.parameters import ProjectParams, describe_validation_error
    from cv_pipelines.errors import ParameterError

    field = ProjectParams.model_fields.get(section)
    if field is None or field.annotation is None:
        raise KeyError(f"no parameters section {section!r}; sections: {', '.join(ProjectParams.model_fields)}")
    values = project_parameters(env, root=root).get(section, {})
    try:
        return field.annotation.model_validate({**values, **overrides})
    except ValidationError as exc:
        # The same sentences as a run's (ConfigCheckHooks): the code outside a session
        # (the main job, serving, scripts) refuses a name that would become a path alike.
        raise ParameterError(describe_validation_error(exc, section)) from None


def project_tracking_uri(env: str | None = None, root: Path | None = None) -> str:
    """The MLflow tracking URI a ``kedro run --env <env>`` tracks to, for code outside a session.

    ``server.mlflow_tracking_uri`` of ``mlflow.yml`` as kedro-mlflow resolves it:
    ``MLFLOW_TRACKING_URI``, else the environment's ``mlflow_server`` global (the team
    set-up's server), else the embedded SQLite store.
    """
    from cv_pipelines.config.mlflow_plugin import mlflow_config_of

    root = root or project_root()
    loader = OmegaConfigLoader(conf_source=str(root / "conf"), env=env, **PROJECT_CONFIG_LOADER_ARGS)
    return str(((mlflow_config_of(loader) or {}).get("server") or {}).get("mlflow_tracking_uri"))
