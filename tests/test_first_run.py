"""A fresh clone's first runs: two at once both succeed while they create the MLflow store."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from tests.conftest import project_env
from tests.support.mlflow_store import STORE


def test_two_first_runs_at_once_both_create_the_embedded_store_and_succeed(bare_project):
    """Real processes: each would migrate the new SQLite store and create the experiment (3 of 3 crashed before).

    Also the test of the store itself: a fresh project (no store yet, unlike the copies
    of the session's template) creates its own, the migrated SQLite database in data/mlflow.
    """
    assert not (bare_project / STORE).exists()
    # What every `kedro run` does first, without the CLI's and the pipeline's start-up: a
    # session's context, whose hooks set MLflow up (the alembic migrations, the experiment).
    code = (
        "from kedro.framework.session import KedroSession\n"
        "from kedro.framework.startup import bootstrap_project\n"
        "bootstrap_project('.')\n"
        "with KedroSession.create(project_path='.', env='test') as session:\n"
        "    print(session.load_context().mlflow.server.mlflow_tracking_uri)\n"
    )
    command = [sys.executable, "-c", code]
    runs = [
        subprocess.Popen(
            command,
            cwd=bare_project,
            env=project_env(bare_project),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
        assert "Traceback" not in output
        assert output.splitlines()[-1] == f"sqlite:///{bare_project}/{STORE}"
    with sqlite3.connect(bare_project / STORE) as db:
        names = [row[0] for row in db.execute("select name from experiments where name = 'cv_pipelines'")]
        (revision,) = db.execute("select version_num from alembic_version").fetchone()
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    assert names == ["cv_pipelines"] and revision  # one experiment, a fully migrated store
    assert {"experiments", "runs", "registered_models"} <= tables
