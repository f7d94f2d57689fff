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


def check_published(root: Path, repository: str, commit: str, tag: str) -> str | None:
    """Refuse a job whose code ``commit`` or dataset version ``tag`` the ``repository`` it clones does not have.

    Asks the repository for its refs (``git ls-remote``, no prompt) and looks for the tag at
    the same commit as here, and for a ref whose history holds ``commit``.

    Returns:
        None when both are there; a clause saying what could not be checked when the
        repository does not answer here or has refs this clone has not fetched (a cluster
        may reach what this machine cannot, so that is a warning, not a refusal).

    Raises:
        ConfigurationError: the tag is missing or elsewhere there, or no ref holds the commit.
    """
    import os

    from cv_pipelines.errors import ConfigurationError

    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
    try:
        listed = subprocess.run(
            ["git", "ls-remote", repository], cwd=root, capture_output=True, text=True, check=False, env=env, timeout=30
        )
    except subprocess.TimeoutExpired:
        return f"{repository} did not list its refs within 30 s"
    if listed.returncode != 0:
        reason = (listed.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"{repository} could not be asked for its refs ({reason})"
    refs: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref.removesuffix("^{}")] = sha  # a tag's peeled line (the commit) comes after its own
    from cv_pipelines.versioning.dataset_versions import current_commit

    here = current_commit(root, tag) or ""
    there = refs.get(f"refs/tags/{tag}")
    if there is None:
        raise ConfigurationError(
            f"The dataset version tag {tag} is not in {repository}, which the job clones; push it "
            f"(git push origin {tag}) or pass --repository, then submit again."
        )
    if there != here:
        raise ConfigurationError(
            f"The dataset version tag {tag} names commit {there[:12]} in {repository} but {here[:12]} here; "
            "make them agree (the tag of a dataset version never moves), then submit again."
        )
    shas = sorted(set(refs.values()))
    checked = subprocess.run(
        ["git", "cat-file", "--batch-check"], cwd=root, input="\n".join(shas) + "\n", capture_output=True, text=True
    ).stdout.splitlines()
    known = [sha for sha, line in zip(shas, checked, strict=True) if not line.endswith(" missing")]
    # On stdin: a project tags every dataset version, so the refs may be too many for a command line.
    outside = subprocess.run(
        ["git", "rev-list", "--max-count=1", "--stdin"],
        cwd=root,
        input="\n".join([commit, *(f"^{sha}" for sha in known)]) + "\n",
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not outside:
        return None
    if len(known) < len(shas):
        return f"{repository} has refs this clone has not fetched, so whether it holds commit {commit[:12]} is unknown"
    raise ConfigurationError(
        f"Commit {commit[:12]} is on no branch or tag of {repository}, which the job clones; push it (git push), "
        "or pass --commit with one that is, then submit again."
    )
