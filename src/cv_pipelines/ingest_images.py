"""Move images from a folder into the content-addressed store and the images registry.

One ingestion is a small transaction that survives ``kill -9`` at any instant:

1. Under the registry's writer lock, finish any ingestion a crash interrupted.
2. Read, hash and check every file (threads: hashing and decoding release the GIL).
3. Write a journal of what this run will do (atomic rename).
4. Stage each new image next to its final store path (hard link, no data copied).
5. Commit the registry part (atomic rename): from here on, the run has happened.
6. Rename the staged images to their final paths, quarantine the rejects, commit
   the rejections part, and remove the inputs from the drop zone.
7. Delete the journal.

Invariant: an image at its final store path is registered, so "already stored?" is
one ``stat`` and never a scan of the registry. Recovery replays steps 4-7 from the
journal; each step is idempotent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
from filelock import FileLock, Timeout

from cv_pipelines import registry_parts
from cv_pipelines.image_checks import (
    CANDIDATE_EXTENSIONS,
    InvalidImageError,
    ValidationMode,
    inspect_image,
)
from cv_pipelines.image_store import link_or_copy, relative_store_path, sha256_bytes, sha256_file

logger = logging.getLogger(__name__)

IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),  # relative to the project root
        ("source_id", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("width", pa.int32()),  # after EXIF orientation
        ("height", pa.int32()),
        ("format", pa.string()),
        ("size_bytes", pa.int64()),
        ("original_name", pa.string()),
        ("original_path", pa.string()),  # relative to the folder it was ingested from
        ("exif_orientation", pa.int8()),
        ("ingest_run_id", pa.string()),
    ]
)

REJECTIONS_SCHEMA = pa.schema(
    [
        ("content_sha256", pa.string()),  # empty when the file could not be read
        ("original_name", pa.string()),
        ("original_path", pa.string()),
        ("quarantine_path", pa.string()),  # relative to the project root
        ("reason", pa.string()),
        ("size_bytes", pa.int64()),
        ("source_id", pa.string()),
        ("rejected_at", pa.timestamp("us", tz="UTC")),
        ("ingest_run_id", pa.string()),
    ]
)

#: Names that uploaders use while a file is still being written; left for the next run.
_IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download")
_JOURNAL_DIR = "_journal"
_LOCK_NAME = ".writer.lock"
_STAGED_SUFFIX = ".staged"


class IngestionLockedError(RuntimeError):
    """Another process holds the registry's writer lock for longer than we may wait."""


@dataclass(frozen=True)
class IngestionSettings:
    """Where to read from and write to; paths may be relative to ``project_root``."""

    project_root: Path
    source_dir: Path
    store_dir: Path
    registry_dir: Path
    quarantine_dir: Path
    source_id: str = "manual_upload"
    #: Remove inputs once stored (the drop zone); False copies from a folder the user keeps.
    consume_source: bool = True
    validation: ValidationMode = "header"
    max_pixels: int = 89_478_485
    workers: int = 4
    lock_timeout_s: float = 600.0
    show_progress: bool = True

    def resolve(self, path: Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.project_root / path

    @property
    def images_registry(self) -> Path:
        return self.resolve(self.registry_dir) / "images"

    @property
    def rejections_registry(self) -> Path:
        return self.resolve(self.registry_dir) / "rejections"

    @property
    def journal_dir(self) -> Path:
        return self.resolve(self.registry_dir) / _JOURNAL_DIR

    def relative_to_root(self, path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(self.project_root.resolve()).as_posix()
        except ValueError:
            # Outside the project (an external store): keep it absolute rather than lie.
            return Path(path).resolve().as_posix()


@dataclass
class IngestionOutcome:
    """One line of the ingestion report: what happened to one input file."""

    original_path: str
    outcome: str  # new | duplicate_of_stored | duplicate_in_drop | rejected | skipped_in_progress
    image_id: str = ""
    detail: str = ""


@dataclass
class IngestionResult:
    run_id: str
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    recovered_runs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outcomes: list[IngestionOutcome] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        handled = self.new + self.duplicates + self.rejected
        return handled / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if not (self.new or self.duplicates or self.rejected):
            prefix = "nothing to ingest: the drop zone is empty; nothing changed"
            if self.recovered_runs:
                prefix += f" (finished {len(self.recovered_runs)} interrupted run(s))"
            return prefix
        text = (
            f"{self.new} new, {self.duplicates} duplicate(s), {self.rejected} rejected "
            f"in {self.seconds:.1f} s ({self.images_per_second:.0f} images/s)"
        )
        if self.recovered_runs:
            text += f"; finished {len(self.recovered_runs)} interrupted run(s)"
        return text

    def report(self) -> pd.DataFrame:
        columns = ["original_path", "outcome", "image_id", "detail"]
        return pd.DataFrame([asdict(o) for o in self.outcomes], columns=columns)


@dataclass
class _Inspected:
    source: Path
    original_path: str  # relative to the source folder
    size_bytes: int
    sha256: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    exif_orientation: int = 1
    error: str = ""


def ingest_images(settings: IngestionSettings) -> IngestionResult:
    """Run one ingestion of ``settings.source_dir``; safe to re-run after any crash."""
    started = time.perf_counter()
    run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    result = IngestionResult(run_id=run_id)
    registry = settings.resolve(settings.registry_dir)
    registry.mkdir(parents=True, exist_ok=True)
    with writer_lock(registry, timeout_s=settings.lock_timeout_s):
        result.recovered_runs = recover_interrupted_ingestions(settings)
        inspected, skipped = _inspect_all(settings)
        result.outcomes.extend(
            IngestionOutcome(p, "skipped_in_progress", detail="still being written; left for the next run")
            for p in skipped
        )
        if inspected:
            journal = _plan(settings, run_id, inspected, result)
            _apply(settings, journal)
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def writer_lock(registry_dir: Path, *, timeout_s: float) -> Iterator[None]:
    """Hold the lock every writer of the store and registries takes.

    An OS-level lock (``flock``): the kernel releases it when its holder dies, so a
    ``kill -9`` never leaves a stale lock behind.
    """
    lock_path = Path(registry_dir) / _LOCK_NAME
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise IngestionLockedError(
            f"Another ingestion or import is writing to {registry_dir} (lock file {lock_path}) "
            f"and did not finish within {timeout_s:.0f} s; run again once it is done, or raise "
            "ingestion.lock_timeout_s."
        ) from None
    try:
        yield
    finally:
        lock.release()


# --- steps ---------------------------------------------------------------------------


def _iter_source_files(source_dir: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _inspect_all(settings: IngestionSettings) -> tuple[list[_Inspected], list[str]]:
    source_dir = settings.resolve(settings.source_dir)
    if not source_dir.exists():
        return [], []
    files, skipped = [], []
    for path in _iter_source_files(source_dir):
        relative = path.relative_to(source_dir).as_posix()
        if path.name.lower().endswith(_IN_PROGRESS_SUFFIXES):
            skipped.append(relative)
        else:
            files.append((path, relative))
    if not files:
        return [], skipped

    def inspect_one(item: tuple[Path, str]) -> _Inspected:
        path, relative = item
        try:
            data = path.read_bytes()
        except OSError as exc:
            return _Inspected(path, relative, 0, error=f"cannot be read: {exc.strerror or exc}")
        found = _Inspected(path, relative, len(data), sha256=sha256_bytes(data))
        if path.suffix.lower() not in CANDIDATE_EXTENSIONS:
            found.error = (
                f"unsupported file type {path.suffix or '(no extension)'!r}; accepted: "
                + ", ".join(sorted(CANDIDATE_EXTENSIONS))
            )
            return found
        try:
            facts = inspect_image(data, max_pixels=settings.max_pixels, mode=settings.validation)
        except InvalidImageError as exc:
            found.error = str(exc)
            return found
        found.format, found.width, found.height = facts.format, facts.width, facts.height
        found.exif_orientation = facts.exif_orientation
        return found

    with ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool:
        results = pool.map(inspect_one, files)
        inspected = list(_with_progress(results, len(files), settings.show_progress, "Checking images"))
    return inspected, skipped


def _with_progress(items, total: int, enabled: bool, label: str):
    if not enabled or total < 200:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        for item in items:
            yield item
            progress.advance(task)


def _plan(
    settings: IngestionSettings, run_id: str, inspected: list[_Inspected], result: IngestionResult
) -> dict:
    """Decide each file's fate and write it to the journal before touching anything."""
    store = settings.resolve(settings.store_dir)
    quarantine = settings.resolve(settings.quarantine_dir) / run_id
    now = datetime.now(timezone.utc).isoformat()
    first_seen: dict[str, str] = {}
    new_images, rejections, remove = [], [], []
    for item in inspected:
        if item.error:
            reason = (
                f"{item.original_path}: {item.error}; fix or re-export the file and drop it again "
                f"(kept in quarantine)"
            )
            target = quarantine / item.original_path
            rejections.append(
                {
                    "source": str(item.source),
                    "content_sha256": item.sha256,
                    "original_name": item.source.name,
                    "original_path": item.original_path,
                    "quarantine_path": settings.relative_to_root(target),
                    "quarantine_abs": str(target),
                    "reason": reason,
                    "size_bytes": item.size_bytes,
                }
            )
            result.rejected += 1
            result.outcomes.append(IngestionOutcome(item.original_path, "rejected", item.sha256, reason))
            continue
        final = store / relative_store_path(item.sha256, item.format)
        if item.sha256 in first_seen:
            result.duplicates += 1
            detail = f"same bytes as {first_seen[item.sha256]} in this drop; stored once"
            result.outcomes.append(IngestionOutcome(item.original_path, "duplicate_in_drop", item.sha256, detail))
            remove.append({"source": str(item.source), "sha256": item.sha256})
            continue
        first_seen[item.sha256] = item.original_path
        if final.exists():
            result.duplicates += 1
            detail = f"already stored as {settings.relative_to_root(final)}"
            result.outcomes.append(IngestionOutcome(item.original_path, "duplicate_of_stored", item.sha256, detail))
            remove.append({"source": str(item.source), "sha256": item.sha256})
            continue
        result.new += 1
        result.outcomes.append(IngestionOutcome(item.original_path, "new", item.sha256))
        new_images.append(
            {
                "source": str(item.source),
                "final": str(final),
                "row": {
                    "image_id": item.sha256,
                    "path": settings.relative_to_root(final),
                    "source_id": settings.source_id,
                    "ingested_at": now,
                    "width": item.width,
                    "height": item.height,
                    "format": item.format,
                    "size_bytes": item.size_bytes,
                    "original_name": item.source.name,
                    "original_path": item.original_path,
                    "exif_orientation": item.exif_orientation,
                    "ingest_run_id": run_id,
                },
            }
        )
        remove.append({"source": str(item.source), "sha256": item.sha256})
    journal = {
        "run_id": run_id,
        "created_at": now,
        "source_id": settings.source_id,
        "consume_source": settings.consume_source,
        "source_dir": str(settings.resolve(settings.source_dir)),
        "new_images": new_images,
        "rejections": rejections,
        "remove_sources": remove if settings.consume_source else [],
    }
    _write_journal(settings.journal_dir, journal)
    for line in _duplicate_lines(result.outcomes):
        logger.info(line)
    for rejection in rejections:
        logger.warning("Rejected %s", rejection["reason"])
    return journal


def _duplicate_lines(outcomes: list[IngestionOutcome], limit: int = 20) -> list[str]:
    duplicates = [o for o in outcomes if o.outcome.startswith("duplicate")]
    lines = [f"Duplicate {o.original_path}: {o.detail}" for o in duplicates[:limit]]
    if len(duplicates) > limit:
        lines.append(f"... and {len(duplicates) - limit} more duplicate(s), listed in the ingestion report")
    return lines


def _apply(settings: IngestionSettings, journal: dict, *, recovering: bool = False) -> None:
    """Steps 4-7; every step is idempotent so recovery can replay it from the journal."""
    run_id = journal["run_id"]
    consume = journal["consume_source"]
    images_part = registry_parts.find_part(settings.images_registry, run_id)
    if images_part is None:
        for item in journal["new_images"]:
            final = Path(item["final"])
            if final.exists():
                continue
            staged = final.with_name(final.name + _STAGED_SUFFIX)
            staged.unlink(missing_ok=True)
            _place(Path(item["source"]), staged, consume=consume)
        rows = pd.DataFrame([item["row"] for item in journal["new_images"]])
        if not rows.empty:
            rows["ingested_at"] = pd.to_datetime(rows["ingested_at"], utc=True)
            registry_parts.append_part(
                settings.images_registry, rows, run_id=run_id, schema=IMAGES_SCHEMA
            )
    for item in journal["new_images"]:
        final = Path(item["final"])
        staged = final.with_name(final.name + _STAGED_SUFFIX)
        if staged.exists():
            os.chmod(staged, 0o444)  # the store is append-only; protect against edits
            os.replace(staged, final)
        elif not final.exists():
            # Crash between commit and staging cleanup with the staged copy gone: the
            # source is still there because sources are removed last.
            _place(Path(item["source"]), final, consume=consume)
    _quarantine(settings, journal)
    for item in journal["remove_sources"]:
        _remove_source(Path(item["source"]), item["sha256"], verify=recovering)
    _remove_empty_dirs(Path(journal["source_dir"]))
    (settings.journal_dir / f"{run_id}.json").unlink(missing_ok=True)


def _place(source: Path, target: Path, *, consume: bool) -> None:
    if consume:
        link_or_copy(source, target)
    else:
        # The user keeps this folder: a hard link would let later edits of their file
        # change a stored image behind its content hash.
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".copying")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def _quarantine(settings: IngestionSettings, journal: dict) -> None:
    rejections = journal["rejections"]
    if not rejections:
        return
    run_id = journal["run_id"]
    for item in rejections:
        source, target = Path(item["source"]), Path(item["quarantine_abs"])
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if journal["consume_source"] and source.exists():
            try:
                os.replace(source, target)
            except OSError:
                shutil.copy2(source, target)
                source.unlink()
        elif source.exists():
            shutil.copy2(source, target)
    if registry_parts.find_part(settings.rejections_registry, run_id) is None:
        rows = pd.DataFrame(
            [
                {key: item[key] for key in REJECTIONS_SCHEMA.names if key in item}
                | {
                    "source_id": journal["source_id"],
                    "rejected_at": journal["created_at"],
                    "ingest_run_id": run_id,
                }
                for item in rejections
            ]
        )
        rows["rejected_at"] = pd.to_datetime(rows["rejected_at"], utc=True)
        registry_parts.append_part(
            settings.rejections_registry, rows[REJECTIONS_SCHEMA.names], run_id=run_id,
            schema=REJECTIONS_SCHEMA,
        )


def _remove_source(source: Path, sha256: str, *, verify: bool) -> None:
    # After a crash a user may have dropped a different file under the same name, so a
    # recovery only removes what the interrupted run stored.
    if verify and source.exists() and sha256_file(source) != sha256:
        return
    source.unlink(missing_ok=True)


def _remove_empty_dirs(source_dir: Path) -> None:
    if not source_dir.exists():
        return
    for root, dirs, files in os.walk(source_dir, topdown=False):
        if Path(root) != source_dir and not dirs and not files:
            try:
                os.rmdir(root)
            except OSError:
                pass


# --- journal -------------------------------------------------------------------------


def _write_journal(journal_dir: Path, journal: dict) -> None:
    journal_dir.mkdir(parents=True, exist_ok=True)
    target = journal_dir / f"{journal['run_id']}.json"
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(journal, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def recover_interrupted_ingestions(settings: IngestionSettings) -> list[str]:
    """Finish every ingestion a crash interrupted (call under the writer lock)."""
    for registry in (settings.images_registry, settings.rejections_registry):
        registry_parts.recover_compaction(registry)
        for stray in registry.glob(".part-*.tmp"):
            stray.unlink(missing_ok=True)  # a part never renamed into place holds nothing committed
    journal_dir = settings.journal_dir
    if not journal_dir.exists():
        return []
    for stray in journal_dir.glob(".*.tmp"):
        stray.unlink(missing_ok=True)  # a journal never committed: its run did nothing
    recovered = []
    for path in sorted(journal_dir.glob("*.json")):
        journal = json.loads(path.read_text(encoding="utf-8"))
        logger.warning("Finishing ingestion run %s that was interrupted", journal["run_id"])
        _apply(settings, journal, recovering=True)
        recovered.append(journal["run_id"])
    return recovered


def read_images_registry(registry_dir: Path) -> pd.DataFrame:
    return registry_parts.read_registry(Path(registry_dir) / "images", schema=IMAGES_SCHEMA)

