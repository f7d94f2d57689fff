"""The state of the project's code in git, for lineage: which commit, and whether it had local changes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_state(root: Path) -> tuple[str | None, bool]:
    """``(HEAD commit or None outside git, whether tracked files differ from it)``."""
    from cv_pipelines.versioning.dataset_versions import current_commit

    commit = current_commit(root, "HEAD")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=False
    )
    return commit, bool(status.stdout.strip()) if status.returncode == 0 else False
