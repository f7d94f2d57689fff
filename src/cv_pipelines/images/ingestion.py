"""Move images from a folder into the content-addressed store and the images registry.

One ingestion is a small transaction that survives ``kill -9`` at any instant:

1. Under the registry's writer lock, finish any ingestion a crash interrupted.
2. Read, hash and check every file (threads: hashing and decoding release the GIL).
3. Write a journal of what this run will do (atomic rename).
4. Commit the registry part (atomic rename): from here on, the run has happened.
5. Hard-link each new image at its store path (no data copied), quarantine the
   rejects, commit the rejections part, and remove the inputs from the drop zone.
6. Delete the journal.

Invariant: an image at its store path is registered (it is linked there only after
its registry part is committed), so "already stored?" is one ``stat`` and never a
scan of the registry. Recovery replays steps 4-6 from the journal; each step is
idempotent, and inputs are removed last, so a replay always finds them.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
from filelock import FileLock, Timeout

from cv_pipelines.files.atomic import copy_atomically, write_text_atomically
from cv_pipelines.images.checks import (
    CANDIDATE_EXTENSIONS,
    InvalidImageError,
    ValidationMode,
    inspect_image,
)
from cv_pipelines.images.store import link_or_copy, sha256_bytes, sha256_file
from cv_pipelines.registries import parts as registry_parts

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
    width: int = 0  # after EXIF orientation; 0 when rejected
    height: int = 0


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
        columns = ["original_path", "outcome", "image_id", "detail", "width", "height"]
        return pd.DataFrame([asdict(o) for o in self.outcomes], columns=columns)


@dataclass
class _Inspected:
    source: str
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
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    result = IngestionResult(run_id=run_id)
    registry = settings.resolve(settings.registry_dir)
    registry.mkdir(parents=True, exist_ok=True)
    with writer_lock(registry, timeout_s=settings.lock_timeout_s):
        result.recovered_runs = recover_interrupted_ingestions(settings)
        files, skipped = _list_inputs(settings)
        result.outcomes.extend(
            IngestionOutcome(p, "skipped_in_progress", detail="still being written; left for the next run")
            for p in skipped
        )
        if files:
            # Planning consumes results while the workers are still reading and hashing.
            journal = _plan(settings, run_id, _inspect_all(settings, files), result)
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


def _iter_source_files(source_dir: str) -> Iterator[tuple[str, str]]:
    """(absolute path, path relative to ``source_dir``) of every visible file, sorted."""
    prefix_len = len(source_dir.rstrip(os.sep)) + 1
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = os.path.join(root, name)
                yield path, path[prefix_len:].replace(os.sep, "/")


def _list_inputs(settings: IngestionSettings) -> tuple[list[tuple[str, str]], list[str]]:
    """Files to ingest as (path, relative path), and files still being written."""
    source_dir = str(settings.resolve(settings.source_dir))
    if not os.path.isdir(source_dir):
        return [], []
    files, skipped = [], []
    for path, relative in _iter_source_files(source_dir):
        if path.lower().endswith(_IN_PROGRESS_SUFFIXES):
            skipped.append(relative)
        else:
            files.append((path, relative))
    return files, skipped


def _inspect_all(settings: IngestionSettings, files: list[tuple[str, str]]) -> Iterator[_Inspected]:
    """Read, hash and check every file, in input order, in parallel when it pays."""
    store = str(settings.resolve(settings.store_dir))
    options = (store, settings.max_pixels, settings.validation)
    workers = min(max(1, settings.workers), os.cpu_count() or 1)
    # Chunks, not one task per file: a task costs about as much as hashing a small image.
    size = max(1, min(256, len(files) // (workers * 8) or 1))
    chunks = [(files[i : i + size], options) for i in range(0, len(files), size)]
    show = settings.show_progress and len(files) >= 200
    if workers == 1 or len(files) < _PROCESS_POOL_MIN_FILES:
        for done in _with_progress(map(_inspect_chunk, chunks), len(chunks), show, "Checking images"):
            yield from done
        return
    # Processes, not threads: PIL's header parsing holds the GIL, and threads measured
    # slower than one thread here. Forking is cheap; the children only read, hash and
    # parse (no locks, no logging), which is what makes fork safe.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for done in _with_progress(pool.map(_inspect_chunk, chunks), len(chunks), show, "Checking images"):
            yield from done


_PROCESS_POOL_MIN_FILES = 400


def _inspect_chunk(args: tuple[list[tuple[str, str]], tuple[str, int, str]]) -> list[_Inspected]:
    chunk, (store, max_pixels, validation) = args
    return [_inspect_file(path, relative, store, max_pixels, validation) for path, relative in chunk]


def _inspect_file(path: str, relative: str, store: str, max_pixels: int, validation: str) -> _Inspected:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return _Inspected(path, relative, 0, error=f"cannot be read: {exc.strerror or exc}")
    found = _Inspected(path, relative, len(data), sha256=sha256_bytes(data))
    suffix = os.path.splitext(path)[1]
    if suffix.lower() not in CANDIDATE_EXTENSIONS:
        found.error = f"unsupported file type {suffix or '(no extension)'!r}; accepted: " + ", ".join(
            sorted(CANDIDATE_EXTENSIONS)
        )
        return found
    try:
        facts = inspect_image(data, max_pixels=max_pixels, mode=validation)
    except InvalidImageError as exc:
        found.error = str(exc)
        return found
    found.format, found.width, found.height = facts.format, facts.width, facts.height
    found.exif_orientation = facts.exif_orientation
    # Shard folders are created here, in parallel: an empty folder is no state, and
    # creating ~10,000 of them one by one later would cost more than the hashing.
    _make_shard_dir(store, found.sha256)
    return found


def _make_shard_dir(store: str, image_id: str) -> None:
    shard = f"{store}/{image_id[0:2]}/{image_id[2:4]}"
    try:
        os.mkdir(shard)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(shard, exist_ok=True)


def _with_progress(items, total: int, enabled: bool, label: str):
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        for item in items:
            yield item
            progress.advance(task)


def _plan(settings: IngestionSettings, run_id: str, inspected: Iterator[_Inspected], result: IngestionResult) -> dict:
    """Decide each file's fate and write it to the journal before touching anything."""
    store = str(settings.resolve(settings.store_dir))
    store_relative = settings.relative_to_root(Path(store))
    quarantine = settings.resolve(settings.quarantine_dir) / run_id
    now = datetime.now(UTC).isoformat()
    first_seen: dict[str, str] = {}
    new_sources: list[str] = []
    new_finals: list[str] = []
    rows: dict[str, list] = {name: [] for name in IMAGES_SCHEMA.names}
    rejections: list[dict] = []
    remove_sources: list[str] = []
    remove_hashes: list[str] = []
    outcomes = result.outcomes
    for item in inspected:
        if item.error:
            reason = (
                f"{item.original_path}: {item.error}; fix or re-export the file and drop it again (kept in quarantine)"
            )
            target = quarantine / item.original_path
            rejections.append(
                {
                    "source": item.source,
                    "content_sha256": item.sha256,
                    "original_name": os.path.basename(item.source),
                    "original_path": item.original_path,
                    "quarantine_path": settings.relative_to_root(target),
                    "quarantine_abs": str(target),
                    "reason": reason,
                    "size_bytes": item.size_bytes,
                }
            )
            result.rejected += 1
            outcomes.append(IngestionOutcome(item.original_path, "rejected", item.sha256, reason))
            continue
        image_id = item.sha256
        shard = f"{image_id[0:2]}/{image_id[2:4]}/{image_id}.{item.format}"
        final = f"{store}/{shard}"
        remove_sources.append(item.source)
        remove_hashes.append(image_id)
        if image_id in first_seen:
            result.duplicates += 1
            detail = f"same bytes as {first_seen[image_id]} in this drop; stored once"
            outcomes.append(
                IngestionOutcome(item.original_path, "duplicate_in_drop", image_id, detail, item.width, item.height)
            )
            continue
        first_seen[image_id] = item.original_path
        if os.path.exists(final):
            result.duplicates += 1
            detail = f"already stored as {store_relative}/{shard}"
            outcomes.append(
                IngestionOutcome(item.original_path, "duplicate_of_stored", image_id, detail, item.width, item.height)
            )
            continue
        result.new += 1
        outcomes.append(IngestionOutcome(item.original_path, "new", image_id, "", item.width, item.height))
        new_sources.append(item.source)
        new_finals.append(final)
        for name, value in (
            ("image_id", image_id),
            ("path", f"{store_relative}/{shard}"),
            ("source_id", settings.source_id),
            ("ingested_at", now),
            ("width", item.width),
            ("height", item.height),
            ("format", item.format),
            ("size_bytes", item.size_bytes),
            ("original_name", os.path.basename(item.source)),
            ("original_path", item.original_path),
            ("exif_orientation", item.exif_orientation),
            ("ingest_run_id", run_id),
        ):
            rows[name].append(value)
    journal = {
        "run_id": run_id,
        "created_at": now,
        "source_id": settings.source_id,
        "consume_source": settings.consume_source,
        "source_dir": str(settings.resolve(settings.source_dir)),
        # Columnar, so writing the journal of a large drop stays cheap.
        "new_images": {"source": new_sources, "final": new_finals, "rows": rows},
        "rejections": rejections,
        "remove_sources": {
            "source": remove_sources if settings.consume_source else [],
            "sha256": remove_hashes if settings.consume_source else [],
        },
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
    """Steps 4-6; every step is idempotent so recovery can replay it from the journal."""
    run_id = journal["run_id"]
    consume = journal["consume_source"]
    new = journal["new_images"]
    if new["source"] and registry_parts.find_part(settings.images_registry, run_id) is None:
        columns = dict(new["rows"])
        stamp = datetime.fromisoformat(journal["created_at"])
        columns["ingested_at"] = [stamp] * len(new["source"])
        table = pa.Table.from_pydict(columns, schema=IMAGES_SCHEMA)
        registry_parts.append_part(settings.images_registry, table, run_id=run_id)
    for source, final in zip(new["source"], new["final"]):
        _place(source, final, consume=consume)
    _quarantine(settings, journal)
    remove = journal["remove_sources"]
    for source, sha256 in zip(remove["source"], remove["sha256"]):
        _remove_source(source, sha256, verify=recovering)
    _remove_empty_dirs(Path(journal["source_dir"]))
    (settings.journal_dir / f"{run_id}.json").unlink(missing_ok=True)


def _place(source: str, final: str, *, consume: bool) -> None:
    """Put ``source`` at the store path ``final`` unless it is there already.

    From the drop zone: a hard link (no bytes copied; the store keeps the inode when the
    input is removed). From a folder the user keeps: a copy, since a hard link would let
    later edits of their file change a stored image behind its content hash.
    """
    if consume:
        try:
            os.link(source, final)
        except FileExistsError:
            return
        except FileNotFoundError:
            if os.path.exists(final):
                return
            if not os.path.exists(source):
                raise
            os.makedirs(os.path.dirname(final), exist_ok=True)
            link_or_copy(source, final)
        except OSError:
            link_or_copy(source, final)  # another file system: copy
    else:
        if os.path.exists(final):
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        copy_atomically(source, final)
    # The store is append-only: make an accidental edit of a stored image fail.
    os.chmod(final, 0o444)


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
            settings.rejections_registry,
            rows[REJECTIONS_SCHEMA.names],
            run_id=run_id,
            schema=REJECTIONS_SCHEMA,
        )


def _remove_source(source: str, sha256: str, *, verify: bool) -> None:
    # After a crash a user may have dropped a different file under the same name, so a
    # recovery only removes what the interrupted run stored.
    if verify and os.path.exists(source) and sha256_file(Path(source)) != sha256:
        return
    try:
        os.unlink(source)
    except FileNotFoundError:
        pass


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
    # json.dumps uses the C encoder; json.dump does not.
    write_text_atomically(journal_dir / f"{journal['run_id']}.json", json.dumps(journal))


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
