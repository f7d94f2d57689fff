"""``python -m cv_pipelines`` runs the Kedro CLI of this project."""

import sys
from pathlib import Path
from typing import Any

from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project


def main(*args: Any, **kwargs: Any) -> Any:
    """Run this project's ``kedro run`` command (a plugin's, if one replaces it) with these arguments.

    Returns what the command returns; in click's standalone mode (the default) it exits
    the process with the run's status instead.
    """
    package_name = Path(__file__).parent.name
    configure_project(package_name)
    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
