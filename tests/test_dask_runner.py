"""The DaskRunner's settings and refusals (its runs: tests/test_matrix.py and tests/test_ingestion.py)."""

from __future__ import annotations

import pytest
from kedro.pipeline import Node

from cv_pipelines.engines.dask_runner import ADDRESS_ENV, DaskRunner, dask_client_settings
from cv_pipelines.errors import ConfigurationError


def test_settings_come_from_base_then_the_environment_then_the_variable_then_runner_params(project, monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert dask_client_settings().model_dump() == {
        "address": None, "n_workers": 2, "threads_per_worker": 1, "connect_timeout_s": 30.0,
    }
    (project / "conf/test/dask.yml").write_text("dask_client:\n  n_workers: 3\n  address: tcp://127.0.0.1:8786\n")
    assert dask_client_settings("test").n_workers == 3
    monkeypatch.setenv(ADDRESS_ENV, "tcp://127.0.0.1:8799")
    assert dask_client_settings("test").address == "tcp://127.0.0.1:8799"
    assert dask_client_settings("test", address="tcp://127.0.0.1:8800", n_workers=None).address == "tcp://127.0.0.1:8800"


def test_a_setting_left_out_is_named_with_the_file_that_sets_it(project):
    (project / "conf/base/dask.yml").write_text("dask_client:\n  address: null\n  n_workers: 2\n  threads_per_worker: 1\n")
    with pytest.raises(ConfigurationError, match=r"'dask_client\.connect_timeout_s' is missing; set it in conf/base/dask\.yml"):
        dask_client_settings()


def _chunks():
    yield 1


def test_nodes_that_yield_their_outputs_are_refused():
    with pytest.raises(ConfigurationError, match=r"The node\(s\) streamed yield their outputs in chunks"):
        DaskRunner()._validate_nodes([Node(_chunks, inputs=None, outputs="chunk", name="streamed")])


def test_a_kedro_run_with_env_reads_that_environments_dask_yml(project, monkeypatch):
    """``--env test`` (not KEDRO_ENV, unset here) picks conf/test/dask.yml: its scheduler, which does not answer."""
    import socket

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from cv_pipelines.errors import ExternalServiceError

    monkeypatch.delenv("KEDRO_ENV", raising=False)
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    (project / "conf/test/dask.yml").write_text(
        f"dask_client:\n  address: tcp://127.0.0.1:{port}\n  connect_timeout_s: 1\n"
    )
    bootstrap_project(project)
    refused = rf"The Dask scheduler at dask_client.address tcp://127.0.0.1:{port}"
    with KedroSession.create(project_path=project, env="test") as session, pytest.raises(ExternalServiceError,
                                                                                          match=refused):
        session.run(pipeline_names=["ingestion"], runner=DaskRunner())
