"""A project's embedded MLflow store (``data/mlflow/mlflow.db``): made once, copied and moved with its project.

Creating a SQLite store runs MLflow's alembic migrations (about 3 s here); a copy of an
already migrated one opens at once. But the store records absolute paths of the project
it was made in (the *Default* experiment's artifact location comes from the working
directory at creation, the project's experiment, runs, logged models and model versions
name their artifact folders, datasets their export), so a copy of a project must have
them rewritten, or a run made in the copy would write its artifacts into the original.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

#: Where a project keeps its embedded store (conf/base/mlflow.yml's default).
STORE = Path("data/mlflow/mlflow.db")


def create_mlflow_store(root: Path) -> Path:
    """Create the empty, fully migrated MLflow store of the project at ``root``; returns the database.

    Made with ``root`` as the working directory, as a ``kedro`` command in the project
    makes it: MLflow anchors the *Default* experiment's artifact location there.
    """
    import mlflow

    db = root / STORE
    db.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(root):
        mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def copy_mlflow_store(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` to ``target`` through SQLite's backup (consistent even while open)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
    return [(table, column[1]) for table in tables for column in db.execute(f'pragma table_info("{table}")')]


def _root_pattern(root: str) -> re.Pattern[str]:
    """``root`` as a whole path: followed by ``/`` or by what ends a path in text (end, quote, space, comma...)."""
    return re.compile("(?:" + "|".join(map(re.escape, {root, quote(root)})) + r')(?=$|[/"\'\s,;)\]}])')


def cells_naming(db_path: Path, root: Path) -> list[str]:
    """``table.column (n row(s))`` for every column of the database at ``db_path`` with a cell naming ``root``.

    A cell names ``root`` when it holds it as a whole path, bare or inside a longer path,
    a ``file://`` URI or JSON, also URI-quoted; ``<root>2`` does not name ``<root>``.
    """
    pattern = _root_pattern(str(root))
    found = []
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.create_function("names_root", 1, lambda cell: cell is not None and bool(pattern.search(str(cell))))
        for table, column in _columns(db):
            (count,) = db.execute(f'select count(*) from "{table}" where names_root("{column}")').fetchone()
            if count:
                found.append(f"{table}.{column} ({count} row(s))")
    return found


def relocate_mlflow_store(db_path: Path, old_root: Path, new_root: Path) -> None:
    """Make the store at ``db_path``, copied from the project ``old_root``, name ``new_root`` instead.

    Every text cell of every table that names ``old_root`` as a whole path (see
    ``cells_naming``: bare, as a prefix, inside a ``file://`` URI or JSON) gets
    ``new_root`` in its place. Raises ``AssertionError`` naming the columns if any cell
    still names ``old_root`` afterwards (one stored as a blob, say).
    """
    old, new = str(old_root), str(new_root)
    pattern = _root_pattern(old)
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.create_function("relocated", 1, lambda cell: pattern.sub(lambda m: new if m[0] == old else quote(new), cell))
        db.create_function("names_root", 1, lambda cell: bool(pattern.search(cell)))
        for table, column in _columns(db):
            db.execute(
                f'update "{table}" set "{column}" = relocated("{column}") '
                f'where typeof("{column}") = \'text\' and names_root("{column}")'
            )
    left = cells_naming(db_path, old_root)
    assert not left, f"the MLflow store copied to {new_root} still names {old_root} in {', '.join(left)}"
