"""Names that become folders, file names or git tags: one rule, checked where they enter.

A label set names its export folders (``data/exports/<label_set>_v<N>``), its lock file
and its dataset versions' tags (``data/<label_set>/v<N>``); a candidate, an import or a
registered model is named the same way. A name is therefore one *portable file name*
(POSIX's portable character set: letters, digits, ``.``, ``_``, ``-``) that is also one
valid *git ref component* (``git check-ref-format``): it cannot climb out of its folder
(``..``, ``/``), hide itself (a leading ``.``), read as a command-line option (a leading
``-``) or be refused as a tag after the commit it names was made.

``escapes``, ``within_folder`` and ``within_data_folder`` are the second line of defence, for the writers:
whatever a name turned into, what is written stays inside its folder and the project's ``data/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from cv_pipelines.errors import ConfigurationError

MAX_NAME_LENGTH = 100

_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")
# Names Windows cannot create as files, whatever the extension: a clone there would break.
_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)

NAME_RULE = (
    f"use 1 to {MAX_NAME_LENGTH} letters, digits, '_', '-' or '.', starting with a letter or digit "
    "(such as 'demo' or 'vehicles_v2')"
)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a folder, file name and git ref component; None when it can."""
    if not isinstance(name, str):
        return f"{name!r} is not text"
    if not _NAME.fullmatch(name):
        return f"{name!r} cannot name a folder or a git tag"
    if ".." in name or name.endswith((".", ".lock")):
        return f"{name!r} cannot name a git tag ('..' inside, or a '.' or '.lock' ending)"
    if _RESERVED.fullmatch(name):
        return f"{name!r} is a reserved file name on Windows"
    return None


def check_name(name: str) -> str:
    """``name`` itself, or ``ValueError`` saying why it cannot be used and what can."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"{problem}; {NAME_RULE}")
    return name


#: git's ancestry suffixes (``HEAD~1``, ``v2^``): they select a commit and name no file.
_ANCESTRY = re.compile(r"(?:~[0-9]*|\^[0-9]*)+$")


def check_revision(revision: str) -> str:
    """A dataset version: a tag (``data/demo/v3``), a branch or a commit hash, as '/'-joined names.

    An ancestry suffix (``HEAD~1``) is allowed; nothing that climbs (``..``) or reads as an option (``-x``).
    """
    parts = _ANCESTRY.sub("", revision).split("/") if isinstance(revision, str) else [revision]
    if any(name_problem(part) is not None for part in parts):
        raise ValueError(
            f"{revision!r} is not a dataset version; give a tag such as 'data/demo/v1' (list them with "
            "`git tag -l 'data/*'`) or a commit hash"
        )
    return revision


#: A parameter that becomes a folder, a file name or a git tag component.
SafeName = Annotated[str, AfterValidator(check_name)]
#: A parameter that names a git revision (a dataset version).
Revision = Annotated[str, AfterValidator(check_revision)]


def escapes(path: Path, folder: Path) -> bool:
    """Whether ``path``, resolved (symlinks and ``..`` followed), lies outside ``folder`` (resolved too)."""
    return not Path(path).resolve().is_relative_to(Path(folder).resolve())


def within_folder(path: Path, folder: Path, *, what: str) -> Path:
    """``path`` resolved, or ``ConfigurationError`` when it does not lie inside ``folder``.

    Resolved (symlinks and ``..`` followed) before the comparison, so neither a crafted
    name nor a link in the way can send a writer out of the folder it writes into.
    """
    inside, resolved = Path(folder).resolve(), Path(path).resolve()
    if not resolved.is_relative_to(inside):
        raise ConfigurationError(
            f"{what} would be written to {resolved}, outside {inside}; check the names in "
            "conf/base/parameters_*.yml and the folders in conf/base/globals.yml."
        )
    return resolved


def within_data_folder(path: Path, project_root: Path, *, what: str) -> Path:
    """``path`` resolved, or ``ConfigurationError`` when it lies outside ``<project_root>/data``."""
    return within_folder(path, Path(project_root) / "data", what=what)
