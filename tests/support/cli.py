"""The ``kedro`` command line, run in the test's own process.

Starting a ``kedro`` process costs seconds of imports each time; the same command run
through Click's test runner costs a fraction of a second once the modules are loaded.
Keep a real process where the process is what a test proves (start-up, environment,
exit status and stderr of the real command, a kill); everything else can run here.

In-process, Click's ``Error: ...`` line and whatever is echoed reach ``result.stderr`` /
``result.stdout``, but log lines do not: ``conf/logging.yml``'s handler writes to the
``sys.stderr`` of the moment logging was configured, so tests read those with ``caplog``.
A project error (``ConfigurationError`` and the like) ends as ``SystemExit`` with its exit
status; any other exception is ``result.exception`` itself, the in-process form of a traceback.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from click.testing import Result


def kedro_cli(root: Path, *args: str, env: str | None = "test") -> Result:
    """Run ``kedro <args>`` in this process in the project at ``root``, as the command line would there.

    ``env`` is the configuration environment (``KEDRO_ENV``, what ``--env`` sets; None:
    Kedro's default). The working directory is ``root`` during the call, as for a command
    typed there. Raises ``AssertionError`` if an MLflow run is left active afterwards: the
    next session of the process would log into it.
    """
    import mlflow
    from click.testing import CliRunner
    from kedro.framework.cli.cli import KedroCLI  # bootstraps the project found at project_path

    with contextlib.chdir(root):
        result = CliRunner().invoke(KedroCLI(project_path=root), list(args), env={"KEDRO_ENV": env})
    active = mlflow.active_run()
    assert active is None, f"`kedro {' '.join(args)}` left MLflow run {active.info.run_id} active"
    return result
