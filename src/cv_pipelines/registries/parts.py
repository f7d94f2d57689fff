"""Append-only parquet registries stored as a folder of part files.

Appending writes one new part (O(new rows)); reading concatenates the parts (one call);
``compact_registry`` folds the parts into one when asked. Every write goes to a
temporary name and is renamed into place, so a reader or a crash never sees a
half-written part.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cv_pipelines.files.atomic import fsync_dir, write_atomically_with

PART_GLOB = "part-*.parquet"
_COMPACTING_SUFFIX = ".compacting"
_REPLACED_SUFFIX = ".replaced"


def part_name(run_id: str) -> str:
    """A part file name that sorts by creation time and is unique per run."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"part-{stamp}-{run_id}.parquet"


def find_part(registry_dir: Path, run_id: str) -> Path | None:
    """The part a run committed, if it did (run ids are unique)."""
    matches = sorted(Path(registry_dir).glob(f"part-*-{run_id}.parquet"))
    return matches[0] if matches else None


def write_atomically(table: pa.Table, target: Path) -> Path:
    """Write ``table`` to ``target`` through a temporary sibling and an atomic rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically_with(target, lambda tmp: pq.write_table(table, tmp))


def append_part(
    registry_dir: Path,
    rows: pd.DataFrame | pa.Table,
    *,
    run_id: str | None = None,
    schema: pa.Schema | None = None,
) -> Path | None:
    """Append ``rows`` as a new part; returns its path, or None when there were no rows."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, schema=schema, preserve_index=False)
    if table.num_rows == 0:
        return None
    name = part_name(run_id or uuid.uuid4().hex[:12])
    return write_atomically(table, Path(registry_dir) / name)


def keyed_part_path(registry_dir: Path, key: str) -> Path:
    """The part that holds every row of one source (a batch, an import)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return Path(registry_dir) / f"part-{safe}.parquet"


def replace_keyed_part(registry_dir: Path, key: str, table: pa.Table, *, ignore_columns: tuple[str, ...] = ()) -> Path:
    """Write the rows of source ``key``, replacing the ones written before.

    Re-pulling a batch or re-importing a data set therefore never duplicates rows, and
    the swap is one atomic rename. When the part already holds the same rows, apart from
    ``ignore_columns`` (when they were written), it is left as it is: a re-import of
    unchanged data changes no file, so no new dataset version follows from it.
    """
    path = keyed_part_path(registry_dir, key)
    if path.exists():
        existing = pq.read_table(path)
        kept = [name for name in table.column_names if name not in ignore_columns]
        if existing.schema.equals(table.schema) and existing.select(kept).equals(table.select(kept)):
            return path
    return write_atomically(table, path)


def list_parts(registry_dir: Path) -> list[Path]:
    """The committed parts, in append order.

    Read-only: during the instant of a compaction swap the registry folder is absent,
    and the folder it replaces still holds the same rows.
    """
    registry_dir = Path(registry_dir)
    if not registry_dir.exists():
        replaced = registry_dir.with_name(registry_dir.name + _REPLACED_SUFFIX)
        if replaced.exists():
            registry_dir = replaced
    return sorted(registry_dir.glob(PART_GLOB))


def read_registry(
    registry_dir: Path | str,
    *,
    columns: list[str] | None = None,
    schema: pa.Schema | None = None,
    fs=None,
) -> pd.DataFrame:
    """All parts as one DataFrame, in append order; empty (with ``schema``'s columns) if none.

    ``fs``: an fsspec file system to read from instead of the local disk (DVC's file
    system at a dataset version), with ``registry_dir`` a path inside it.
    """
    if fs is None:
        parts = list_parts(Path(registry_dir))
        tables = [pq.read_table(part, columns=columns) for part in parts]
    else:
        folder = PurePosixPath(registry_dir).as_posix()
        listed = fs.ls(folder, detail=False) if fs.exists(folder) else []
        parts = sorted(p for p in listed if fnmatch(PurePosixPath(p).name, PART_GLOB))
        tables = []
        for part in parts:
            with fs.open(part, "rb") as handle:
                tables.append(pq.read_table(handle, columns=columns))
    if not parts:
        if schema is None:
            return pd.DataFrame(columns=columns or [])
        empty = schema.empty_table()
        return empty.select(columns).to_pandas() if columns else empty.to_pandas()
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def compact_registry(registry_dir: Path) -> int:
    """Fold every part into one; returns how many parts were folded.

    Crash-safe: the compacted folder is built beside the registry, then swapped in
    with two renames that ``recover_compaction`` completes if interrupted between them.
    Call it while holding the registry's writer lock.
    """
    registry_dir = Path(registry_dir)
    recover_compaction(registry_dir)
    parts = list_parts(registry_dir)
    if len(parts) <= 1:
        return len(parts)
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    staging = registry_dir.with_name(registry_dir.name + _COMPACTING_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    write_atomically(table, staging / parts[-1].name)
    (staging / "COMPLETE").touch()
    fsync_dir(staging)
    replaced = registry_dir.with_name(registry_dir.name + _REPLACED_SUFFIX)
    os.replace(registry_dir, replaced)
    os.replace(staging, registry_dir)
    (registry_dir / "COMPLETE").unlink()
    shutil.rmtree(replaced)
    return len(parts)


def recover_compaction(registry_dir: Path) -> None:
    """Finish or undo a compaction that a crash interrupted (call under the writer lock)."""
    registry_dir = Path(registry_dir)
    staging = registry_dir.with_name(registry_dir.name + _COMPACTING_SUFFIX)
    replaced = registry_dir.with_name(registry_dir.name + _REPLACED_SUFFIX)
    if not staging.exists() and not replaced.exists():
        return
    if not registry_dir.exists() and staging.exists() and (staging / "COMPLETE").exists():
        os.replace(staging, registry_dir)
    if not registry_dir.exists() and replaced.exists():
        os.replace(replaced, registry_dir)
    (registry_dir / "COMPLETE").unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(replaced, ignore_errors=True)
