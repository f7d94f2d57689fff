"""Move images from a folder into the content-addressed store and the images registry.

Ingestion comes in three steps, each a function of its own, so the Kedro pipeline can
run them as nodes and a dataset's save (``ImageStoreDataset``) can commit the result:

1. :func:`list_new_images`: the files waiting in a folder (nested folders included,
   dotfiles skipped, files still being uploaded left for the next run).
2. :func:`check_new_images`: read, hash and check every file (processes: hashing and
   decoding hold the GIL in PIL; under the ``DaskRunner``, the Dask cluster's workers), and :func:`plan_ingestion`: decide each file's fate
   (a candidate for the store, a duplicate within the drop, or a reject). Only regular
   files are read (``files/regular.py``): a symbolic link (wherever it points, inside
   the drop zone or out, dangling or a loop; a link to a folder is not walked into), a
   FIFO, a socket or a device is rejected unread, in bounded time, and moved as it is
   (a rename: never followed, never opened) to the quarantine with its reason, so it
   leaves the drop zone like any reject. Images Ultralytics cannot train on are
   rejected here too (``images/checks.py``).
3. :func:`commit_ingestion`: a small transaction that survives ``kill -9`` at any
   instant:

   a. Under the registries' writer lock, finish any ingestion a crash interrupted.
   b. Resolve the plan against the store (a candidate already stored is a duplicate)
      and write a journal of what this run will do (atomic rename).
   c. Commit the registry part (atomic rename): from here on, the run has happened.
   d. Hard-link each new image at its store path (no data copied), quarantine the
      rejects, commit the rejections part, and remove the inputs from the drop zone.
   e. Delete the journal.

:func:`ingest_images` runs all three under one lock, recovery first.

Invariant: what the store holds is a regular file of its own (a hard link of an input
with no other name, else a copy), and an image at its store path is registered (it is
placed there only after its registry part is committed), so "already stored?" is one
``stat`` and never a scan of the registry. Recovery replays c-e from the journal; each step is idempotent,
and inputs are removed last, so a replay always finds them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from cv_pipelines.config.parameters import IngestionParams
from cv_pipelines.files.atomic import write_atomically_with, write_text_atomically
from cv_pipelines.files.regular import NotRegularFileError, open_regular_file, read_regular_file, sha256_regular_file
from cv_pipelines.files.stamps import utc_stamp
from cv_pipelines.images.checks import CANDIDATE_EXTENSIONS, InvalidImageError, inspect_image
from cv_pipelines.images.store import sha256_bytes
from cv_pipelines.registries import parts as registry_parts
from cv_pipelines.registries.schemas import IMAGES_SCHEMA, REJECTIONS_SCHEMA
from cv_pipelines.registries.writer_lock import RegistryLockedError, writer_lock

__all__ = [
    "IMAGES_SCHEMA",
    "REJECTIONS_SCHEMA",
    "CheckedFile",
    "CheckedImages",
    "IngestionJob",
    "IngestionLockedError",
    "IngestionOutcome",
    "IngestionPlan",
    "IngestionResult",
    "NewImages",
    "StoreLayout",
    "check_new_images",
    "commit_ingestion",
    "describe_committed_plan",
    "ingest_images",
    "list_new_images",
    "plan_ingestion",
    "read_images_registry",
    "recover_interrupted_ingestions",
    "writer_lock",
]

logger = logging.getLogger(__name__)

#: Names that uploaders use while a file is still being written; left for the next run.
_IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download")
_JOURNAL_DIR = "_journal"
_PROCESS_POOL_MIN_FILES = 400

#: The writer lock timed out (the registries' error, under the name ingestion callers know).
IngestionLockedError = RegistryLockedError


@dataclass(frozen=True)
class StoreLayout:
    """Where the image store, its registries and its quarantine are.

    Paths may be relative to ``project_root``; registry rows record paths relative to it.
    """

    project_root: Path
    store_dir: Path
    registry_dir: Path
    quarantine_dir: Path

    def resolve(self, path: Path | str) -> Path:
        """``path`` anchored to the project root unless it is absolute."""
        path = Path(path)
        return path if path.is_absolute() else self.project_root / path

    @property
    def store(self) -> Path:
        """The store's folder, resolved."""
        return self.resolve(self.store_dir)

    @property
    def registry(self) -> Path:
        """The folder of the registries (and of the writer lock), resolved."""
        return self.resolve(self.registry_dir)

    @property
    def images_registry(self) -> Path:
        """The images registry's folder."""
        return self.registry / "images"

    @property
    def rejections_registry(self) -> Path:
        """The rejections registry's folder."""
        return self.registry / "rejections"

    @property
    def journal_dir(self) -> Path:
        """Where the journals of runs in progress are kept."""
        return self.registry / _JOURNAL_DIR

    def relative_to_root(self, path: Path | str) -> str:
        """``path`` relative to the project root, as registry rows record it (absolute when outside)."""
        try:
            return Path(path).resolve().relative_to(self.project_root.resolve()).as_posix()
        except ValueError:
            # Outside the project (an external store): keep it absolute rather than lie.
            return Path(path).resolve().as_posix()


@dataclass(frozen=True)
class IngestionJob:
    """One whole ingestion for :func:`ingest_images`: a folder into a store, with its parameters.

    ``consume_source``: remove inputs once stored (the drop zone); False copies from a
    folder the user keeps (the COCO import).
    """

    layout: StoreLayout
    source_dir: Path
    params: IngestionParams
    consume_source: bool = True


@dataclass(frozen=True)
class NewImages:
    """What waits in a drop zone: files to ingest and files still being written."""

    folder: Path
    files: tuple[tuple[str, str], ...] = ()  # (absolute path, path relative to ``folder``)
    in_progress: tuple[str, ...] = ()  # relative paths

    def __len__(self) -> int:
        """How many files are ready to ingest."""
        return len(self.files)


@dataclass(frozen=True)
class CheckedFile:
    """One input after reading, hashing and checking it; ``error`` says why it is rejected."""

    source: str
    original_path: str  # relative to the source folder
    size_bytes: int
    sha256: str = ""
    format: str = ""
    width: int = 0
    height: int = 0
    exif_orientation: int = 1
    error: str = ""
    kind: str = "file"  # what the entry is: file, or symlink, fifo, socket, ... (set aside unread)


@dataclass(frozen=True)
class CheckedImages:
    """Every input of one run, checked, in input order; ``run_id`` names the run."""

    run_id: str
    started_at: float  # time.time() when the run started
    folder: Path
    files: tuple[CheckedFile, ...]
    in_progress: tuple[str, ...] = ()


Fate = Literal["candidate", "duplicate_in_drop", "rejected"]


@dataclass(frozen=True)
class PlannedFile:
    """A checked input and what the plan does with it (``first``: the file whose bytes it repeats)."""

    file: CheckedFile
    fate: Fate
    first: str = ""


@dataclass(frozen=True)
class IngestionPlan:
    """What one run will do, decided before touching anything; the store resolves candidates."""

    run_id: str
    started_at: float
    folder: Path
    source_id: str
    consume_source: bool
    lock_timeout_s: float
    entries: tuple[PlannedFile, ...]
    in_progress: tuple[str, ...] = ()


@dataclass
class IngestionOutcome:
    """One line of the ingestion report: what happened to one input file."""

    original_path: str
    outcome: str  # new | duplicate_of_stored | duplicate_in_drop | rejected | skipped_in_progress | vanished
    image_id: str = ""
    detail: str = ""
    width: int = 0  # after EXIF orientation; 0 when rejected
    height: int = 0


@dataclass
class IngestionResult:
    """What a run did: counts, the interrupted runs it finished first, one outcome per file."""

    run_id: str
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    recovered_runs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outcomes: list[IngestionOutcome] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Files handled per second of the run."""
        handled = self.new + self.duplicates + self.rejected
        return handled / self.seconds if self.seconds > 0 else 0.0

    def add(self, outcome: IngestionOutcome) -> None:
        """Record one file's outcome and count it."""
        self.outcomes.append(outcome)
        if outcome.outcome == "new":
            self.new += 1
        elif outcome.outcome.startswith("duplicate"):
            self.duplicates += 1
        elif outcome.outcome == "rejected":
            self.rejected += 1

    def summary(self) -> str:
        """One line for the log: counts, time and throughput, or that nothing changed."""
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
        """One row per input file: its path, outcome, image id, detail and size."""
        columns = ["original_path", "outcome", "image_id", "detail", "width", "height"]
        return pd.DataFrame([asdict(o) for o in self.outcomes], columns=columns)


# --- the whole run -----------------------------------------------------------------------


def ingest_images(job: IngestionJob) -> IngestionResult:
    """Run one ingestion of ``job.source_dir`` under the writer lock; safe to re-run after any crash.

    Raises:
        IngestionLockedError: another writer held the lock for ``params.lock_timeout_s``.
    """
    started = time.time()
    layout, params = job.layout, job.params
    layout.registry.mkdir(parents=True, exist_ok=True)
    with writer_lock(layout.registry, timeout_s=params.lock_timeout_s, holder=_holder(job.consume_source)):
        recovered = recover_interrupted_ingestions(layout)
        waiting = list_new_images(layout.resolve(job.source_dir))
        checked = check_new_images(waiting, params, started_at=started)
        plan = plan_ingestion(checked, params, consume_source=job.consume_source)
        return _commit_locked(plan, layout, recovered, recheck_sources=False)


def commit_ingestion(plan: IngestionPlan, layout: StoreLayout) -> IngestionResult:
    """Commit ``plan`` into the store and registries: steps a-e of the module docstring.

    The plan may have been made before the lock was taken; inputs that another writer
    or a recovery removed since are left out, so nothing is registered twice.

    Raises:
        IngestionLockedError: another writer held the lock for ``plan.lock_timeout_s``.
    """
    layout.registry.mkdir(parents=True, exist_ok=True)
    with writer_lock(layout.registry, timeout_s=plan.lock_timeout_s, holder=_holder(plan.consume_source)):
        recovered = recover_interrupted_ingestions(layout)
        return _commit_locked(plan, layout, recovered, recheck_sources=True)


def _holder(consume_source: bool) -> str:
    return "an ingestion" if consume_source else "an image import"


def _commit_locked(
    plan: IngestionPlan, layout: StoreLayout, recovered: list[str], *, recheck_sources: bool
) -> IngestionResult:
    result = IngestionResult(run_id=plan.run_id, recovered_runs=recovered)
    for path in plan.in_progress:
        result.add(IngestionOutcome(path, "skipped_in_progress", detail="still being written; left for the next run"))
    entries = plan.entries
    if recheck_sources:
        # Inputs a recovery or another writer removed since the plan was made are done;
        # a copy of one of them that is still there becomes the one to store.
        entries = _planned([e.file for e in entries if os.path.lexists(e.file.source)])
    if entries:
        journal = _journal_for(replace(plan, entries=entries), layout, result)
        _write_journal(layout.journal_dir, journal)
        for line in _duplicate_lines(result.outcomes):
            logger.info(line)
        for rejection in journal["rejections"]:
            logger.warning("Rejected %s", rejection["reason"])
        _apply(layout, journal)
    result.seconds = time.time() - plan.started_at
    return result


# --- step 1: what is waiting ---------------------------------------------------------------


def list_new_images(folder: Path | str) -> NewImages:
    """The files waiting in ``folder`` (sorted, nested folders included, dotfiles skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return NewImages(folder=folder)
    files, in_progress = [], []
    for path, relative in _iter_source_files(str(folder)):
        if path.lower().endswith(_IN_PROGRESS_SUFFIXES):
            in_progress.append(relative)
        else:
            files.append((path, relative))
    return NewImages(folder=folder, files=tuple(files), in_progress=tuple(in_progress))


def _iter_source_files(source_dir: str) -> Iterator[tuple[str, str]]:
    """(absolute path, path relative to ``source_dir``) of every visible entry but folders, sorted.

    Links, pipes, sockets and devices are listed too, so the check sets them aside with
    their reason; a link to a folder is listed as an entry, never walked into.
    """
    prefix_len = len(source_dir.rstrip(os.sep)) + 1
    for root, dirs, files in os.walk(source_dir):
        linked_dirs = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked_dirs)
        for name in sorted([*files, *linked_dirs]):
            if not name.startswith("."):
                path = os.path.join(root, name)
                yield path, path[prefix_len:].replace(os.sep, "/")


# --- step 2: check and plan ----------------------------------------------------------------


def new_run_id() -> str:
    """A run id that sorts by start time and is unique: ``<UTC stamp>-<8 hex>``."""
    return f"{utc_stamp()}-{uuid.uuid4().hex[:8]}"


def check_new_images(
    waiting: NewImages, params: IngestionParams, *, started_at: float | None = None, dask_client: Any = None
) -> CheckedImages:
    """Read, hash and check every waiting file, in input order, in parallel when it pays.

    On a Dask cluster when ``dask_client`` is given or when called on a Dask worker (a
    node run by the ``DaskRunner``): the files' chunks are spread over its workers.
    Nothing is written either way; what is stored and registered is decided and
    written later, by the caller, in one place.
    """
    started = time.time() if started_at is None else started_at
    files = list(waiting.files)
    checked = tuple(_inspect_all(files, params, dask_client)) if files else ()
    return CheckedImages(new_run_id(), started, waiting.folder, checked, waiting.in_progress)


def plan_ingestion(checked: CheckedImages, params: IngestionParams, *, consume_source: bool = True) -> IngestionPlan:
    """Decide each checked file's fate: a candidate for the store, a duplicate in this drop, a reject."""
    return IngestionPlan(
        run_id=checked.run_id,
        started_at=checked.started_at,
        folder=checked.folder,
        source_id=params.source_id,
        consume_source=consume_source,
        lock_timeout_s=params.lock_timeout_s,
        entries=_planned(checked.files),
        in_progress=checked.in_progress,
    )


def _planned(files: Iterable[CheckedFile]) -> tuple[PlannedFile, ...]:
    """Each file's fate, in input order: the first file of some bytes is the candidate, later ones duplicates."""
    first_seen: dict[str, str] = {}
    entries = []
    for item in files:
        if item.error:
            entries.append(PlannedFile(item, "rejected"))
        elif item.sha256 in first_seen:
            entries.append(PlannedFile(item, "duplicate_in_drop", first_seen[item.sha256]))
        else:
            first_seen[item.sha256] = item.original_path
            entries.append(PlannedFile(item, "candidate"))
    return tuple(entries)


def _inspect_all(
    files: list[tuple[str, str]], params: IngestionParams, dask_client: Any = None
) -> Iterator[CheckedFile]:
    options = (params.max_pixels, params.validation)
    show = params.show_progress and len(files) >= 200
    if dask_client is not None or _on_dask_worker():
        yield from _inspect_on_dask(files, options, show, dask_client)
        return
    workers = min(max(1, params.workers), os.cpu_count() or 1)
    chunks = _chunks(files, options, workers)
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


def _chunks(files: list[tuple[str, str]], options: tuple[int, str], workers: int) -> list:
    # Chunks, not one task per file: a task costs about as much as hashing a small image.
    size = max(1, min(256, len(files) // (workers * 8) or 1))
    return [(files[i : i + size], options) for i in range(0, len(files), size)]


def _on_dask_worker() -> bool:
    """Whether this runs inside a Dask worker's task (distributed is loaded only where Dask is used)."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _inspect_on_dask(
    files: list[tuple[str, str]], options: tuple[int, str], show: bool, client: Any
) -> Iterator[CheckedFile]:
    """The chunks checked by the cluster's workers, results in input order."""
    from distributed import worker_client

    # On a worker, worker_client gives this task's slot back to the cluster while it waits.
    with contextlib.nullcontext(client) if client is not None else worker_client() as dask:
        threads = sum(dask.nthreads().values()) or 1
        futures = dask.map(_inspect_chunk, _chunks(files, options, threads), pure=False)
        for done in _with_progress((future.result() for future in futures), len(futures), show, "Checking images"):
            yield from done


def _inspect_chunk(args: tuple[list[tuple[str, str]], tuple[int, str]]) -> list[CheckedFile]:
    chunk, (max_pixels, validation) = args
    return [_inspect_file(path, relative, max_pixels, validation) for path, relative in chunk]


def _inspect_file(path: str, relative: str, max_pixels: int, validation: str) -> CheckedFile:
    try:
        data = read_regular_file(path)
    except NotRegularFileError as exc:
        return CheckedFile(path, relative, 0, error=str(exc), kind=exc.kind)
    except OSError as exc:
        return CheckedFile(path, relative, 0, error=f"cannot be read: {exc.strerror or exc}")
    digest = sha256_bytes(data)
    suffix = os.path.splitext(path)[1]
    if suffix.lower() not in CANDIDATE_EXTENSIONS:
        accepted = ", ".join(sorted(CANDIDATE_EXTENSIONS))
        error = f"unsupported file type {suffix or '(no extension)'!r}; accepted: {accepted}"
        return CheckedFile(path, relative, len(data), sha256=digest, error=error)
    try:
        facts = inspect_image(data, max_pixels=max_pixels, mode=validation)  # type: ignore[arg-type]
    except InvalidImageError as exc:
        return CheckedFile(path, relative, len(data), sha256=digest, error=str(exc))
    return CheckedFile(
        path, relative, len(data), digest, facts.format, facts.width, facts.height, facts.exif_orientation
    )


def _with_progress(items: Iterable[Any], total: int, enabled: bool, label: str) -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    from cv_pipelines.config.console import step_progress

    with step_progress(label, total=total) as row:
        for done, item in enumerate(items, start=1):
            yield item
            row.update(completed=done)


# --- step 3: the journal of one run --------------------------------------------------------


def _journal_for(plan: IngestionPlan, layout: StoreLayout, result: IngestionResult) -> dict:
    """Resolve the plan against the store (under the lock) into the journal; records outcomes."""
    store = str(layout.store)
    store_relative = layout.relative_to_root(layout.store)
    quarantine = layout.resolve(layout.quarantine_dir) / plan.run_id
    now = datetime.now(UTC).isoformat()
    new_sources: list[str] = []
    new_finals: list[str] = []
    rows: dict[str, list] = {name: [] for name in IMAGES_SCHEMA.names}
    rejections: list[dict] = []
    removals: list[CheckedFile] = []
    recorded = set() if plan.consume_source else _recorded_rejections(layout, plan.source_id)
    for entry in plan.entries:
        item = entry.file
        if entry.fate == "rejected":
            rejection = _rejection_entry(item, quarantine / item.original_path, layout, plan.consume_source)
            if (item.original_path, item.sha256) not in recorded:
                rejections.append(rejection)
            result.add(IngestionOutcome(item.original_path, "rejected", item.sha256, rejection["reason"]))
            continue
        removals.append(item)
        shard = f"{item.sha256[0:2]}/{item.sha256[2:4]}/{item.sha256}.{item.format}"
        if entry.fate == "duplicate_in_drop":
            detail = f"same bytes as {entry.first} in this drop; stored once"
            result.add(_outcome(item, "duplicate_in_drop", detail))
        elif os.path.exists(f"{store}/{shard}"):
            result.add(_outcome(item, "duplicate_of_stored", f"already stored as {store_relative}/{shard}"))
        else:
            result.add(_outcome(item, "new", ""))
            new_sources.append(item.source)
            new_finals.append(f"{store}/{shard}")
            for name, value in _registry_row(item, f"{store_relative}/{shard}", plan, now).items():
                rows[name].append(value)
    consumed = removals if plan.consume_source else []
    return {
        "run_id": plan.run_id,
        "created_at": now,
        "source_id": plan.source_id,
        "consume_source": plan.consume_source,
        "source_dir": str(plan.folder),
        # Columnar, so writing the journal of a large drop stays cheap.
        "new_images": {"source": new_sources, "final": new_finals, "rows": rows},
        "rejections": rejections,
        "remove_sources": {"source": [i.source for i in consumed], "sha256": [i.sha256 for i in consumed]},
    }


def _recorded_rejections(layout: StoreLayout, source_id: str) -> set[tuple[str, str]]:
    """(original_path, sha256) of the files already rejected from ``source_id``.

    A folder the user keeps (the COCO import) still holds its bad files at the next
    run: the same bytes at the same path are quarantined and recorded once, not per run.
    """
    if not layout.rejections_registry.is_dir():
        return set()
    columns = ["source_id", "original_path", "content_sha256"]
    rows = registry_parts.read_registry(layout.rejections_registry, columns=columns, schema=REJECTIONS_SCHEMA)
    mine = rows[rows["source_id"] == source_id]
    return set(zip(mine["original_path"], mine["content_sha256"], strict=True))


def _outcome(item: CheckedFile, outcome: str, detail: str) -> IngestionOutcome:
    return IngestionOutcome(item.original_path, outcome, item.sha256, detail, item.width, item.height)


def _rejection_reason(item: CheckedFile) -> str:
    if item.kind != "file":
        # Refused whatever it points to, inside the drop zone or not: the store keeps only
        # files it owns, and a link's target can change or vanish behind a registered id.
        return f"{item.original_path}: {item.error}; drop a copy of the file itself instead (the entry is set aside in quarantine)"
    return f"{item.original_path}: {item.error}; fix or re-export the file and drop it again (kept in quarantine)"


def _rejection_entry(item: CheckedFile, target: Path, layout: StoreLayout, consume: bool) -> dict:
    reason = _rejection_reason(item)
    # A link or a pipe in a folder the user keeps is not moved, and has no bytes to copy.
    kept = consume or item.kind == "file"
    return {
        "source": item.source,
        "kind": item.kind,
        "content_sha256": item.sha256,
        "original_name": os.path.basename(item.source),
        "original_path": item.original_path,
        "quarantine_path": layout.relative_to_root(target) if kept else "",
        "quarantine_abs": str(target) if kept else "",
        "reason": reason,
        "size_bytes": item.size_bytes,
    }


def _registry_row(item: CheckedFile, path: str, plan: IngestionPlan, now: str) -> dict[str, Any]:
    return {
        "image_id": item.sha256,
        "path": path,
        "source_id": plan.source_id,
        "ingested_at": now,
        "width": item.width,
        "height": item.height,
        "format": item.format,
        "size_bytes": item.size_bytes,
        "original_name": os.path.basename(item.source),
        "original_path": item.original_path,
        "exif_orientation": item.exif_orientation,
        "ingest_run_id": plan.run_id,
    }


def describe_committed_plan(plan: IngestionPlan, images: pd.DataFrame) -> IngestionResult:
    """What a committed plan did, read back from the images registry (``images``) after the commit.

    A candidate registered by this run is new; one registered by an earlier run is a
    duplicate of a stored image; one registered by nobody was removed from the drop
    zone before the commit could store it.
    """
    result = IngestionResult(run_id=plan.run_id)
    for path in plan.in_progress:
        result.add(IngestionOutcome(path, "skipped_in_progress", detail="still being written; left for the next run"))
    runs = dict(zip(images["image_id"], images["ingest_run_id"], strict=True)) if not images.empty else {}
    paths = dict(zip(images["image_id"], images["path"], strict=True)) if not images.empty else {}
    for entry in plan.entries:
        item = entry.file
        if entry.fate == "rejected":
            result.add(IngestionOutcome(item.original_path, "rejected", item.sha256, _rejection_reason(item)))
        elif entry.fate == "duplicate_in_drop":
            result.add(_outcome(item, "duplicate_in_drop", f"same bytes as {entry.first} in this drop; stored once"))
        elif runs.get(item.sha256) == plan.run_id:
            result.add(_outcome(item, "new", ""))
        elif item.sha256 in runs:
            result.add(_outcome(item, "duplicate_of_stored", f"already stored as {paths[item.sha256]}"))
        else:
            result.add(_outcome(item, "vanished", "removed from the folder before it could be stored"))
    result.seconds = time.time() - plan.started_at
    return result


def _duplicate_lines(outcomes: list[IngestionOutcome], limit: int = 20) -> list[str]:
    duplicates = [o for o in outcomes if o.outcome.startswith("duplicate")]
    lines = [f"Duplicate {o.original_path}: {o.detail}" for o in duplicates[:limit]]
    if len(duplicates) > limit:
        lines.append(f"... and {len(duplicates) - limit} more duplicate(s), listed in the ingestion report")
    return lines


# --- steps c-e: applying a journal ----------------------------------------------------------


def _apply(layout: StoreLayout, journal: dict, *, recovering: bool = False) -> None:
    """Steps c-e; every step is idempotent so recovery can replay it from the journal."""
    run_id = journal["run_id"]
    consume = journal["consume_source"]
    new = journal["new_images"]
    if new["source"] and registry_parts.find_part(layout.images_registry, run_id) is None:
        columns = dict(new["rows"])
        stamp = datetime.fromisoformat(journal["created_at"])
        columns["ingested_at"] = [stamp] * len(new["source"])
        table = pa.Table.from_pydict(columns, schema=IMAGES_SCHEMA)
        registry_parts.append_part(layout.images_registry, table, run_id=run_id)
    for source, final in zip(new["source"], new["final"], strict=True):
        _place(source, final, consume=consume)
    _quarantine(layout, journal)
    remove = journal["remove_sources"]
    for source, sha256 in zip(remove["source"], remove["sha256"], strict=True):
        _remove_source(source, sha256, verify=recovering)
    _remove_empty_dirs(Path(journal["source_dir"]))
    (layout.journal_dir / f"{run_id}.json").unlink(missing_ok=True)


def _place(source: str, final: str, *, consume: bool) -> None:
    """Put the bytes of the regular file ``source`` at the store path ``final`` unless it is there already.

    What the store holds is always a regular file of its own. From the drop zone: a hard
    link (no bytes copied; the store keeps the inode when the input is removed), but only
    of a file with no other name, since another name (``ln /elsewhere/x.jpg``) would let
    its owner edit a stored image, and the store's read-only mode would reach it. From a
    folder the user keeps, or across file systems: a copy.

    Raises:
        NotRegularFileError: ``source`` was replaced by a link, pipe or device since it was checked.
        FileNotFoundError: ``source`` is gone and ``final`` is not stored.
    """
    if os.path.lexists(final):
        return
    os.makedirs(os.path.dirname(final), exist_ok=True)
    fd = open_regular_file(source)
    try:
        checked = os.fstat(fd)
        if not (consume and checked.st_nlink == 1 and _link_same_inode(source, final, checked)):
            _copy_descriptor(fd, final)
    finally:
        os.close(fd)
    # The store is append-only: make an accidental edit of a stored image fail. Through a
    # descriptor opened without following links, so only the store's own file changes mode.
    stored = os.open(final, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fchmod(stored, 0o444)
    finally:
        os.close(stored)


def _link_same_inode(source: str, final: str, checked: os.stat_result) -> bool:
    """Hard-link ``source`` at ``final``; False (nothing left at ``final``) when a copy must do."""
    try:
        os.link(source, final, follow_symlinks=False)
    except FileExistsError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False  # another file system, or links not allowed: copy
        raise
    linked = os.lstat(final)
    if (linked.st_dev, linked.st_ino) != (checked.st_dev, checked.st_ino):
        os.unlink(final)  # ``source`` was swapped since it was opened: copy what was checked
        return False
    return True


def _copy_descriptor(fd: int, final: str) -> None:
    def write(tmp: Path) -> None:
        with open(os.dup(fd), "rb") as source, open(tmp, "wb") as target:
            source.seek(0)
            shutil.copyfileobj(source, target, 1 << 20)

    write_atomically_with(final, write, durable=False, suffix=".copying")


def _quarantine(layout: StoreLayout, journal: dict) -> None:
    rejections = journal["rejections"]
    if not rejections:
        return
    for item in rejections:
        if item["quarantine_abs"]:
            _move_to_quarantine(item["source"], item["quarantine_abs"], consume=journal["consume_source"])
    run_id = journal["run_id"]
    if registry_parts.find_part(layout.rejections_registry, run_id) is None:
        rows = pd.DataFrame(
            [
                {key: item[key] for key in REJECTIONS_SCHEMA.names if key in item}
                | {"source_id": journal["source_id"], "rejected_at": journal["created_at"], "ingest_run_id": run_id}
                for item in rejections
            ]
        )
        rows["rejected_at"] = pd.to_datetime(rows["rejected_at"], utc=True)
        registry_parts.append_part(
            layout.rejections_registry, rows[REJECTIONS_SCHEMA.names], run_id=run_id, schema=REJECTIONS_SCHEMA
        )


def _move_to_quarantine(source: str, target: str, *, consume: bool) -> None:
    """Set ``source`` aside at ``target``: moved from the drop zone, copied from a folder the user keeps.

    A move is a rename of the entry itself, so a link is moved as a link (never followed)
    and a pipe is never opened.
    """
    if os.path.lexists(target) or not os.path.lexists(source):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if consume:
        try:
            os.replace(source, target)  # a move, not a write: the bytes are already whole
            return
        except OSError:
            pass  # another file system: copy, then remove
    try:
        fd = open_regular_file(source)
    except NotRegularFileError:
        # A link or a pipe across file systems: it holds no bytes, and its rejection
        # record says what it was; it still leaves the drop zone.
        if consume:
            os.unlink(source)
        return
    try:
        _copy_descriptor(fd, target)
    finally:
        os.close(fd)
    if consume:
        os.unlink(source)


def _remove_source(source: str, sha256: str, *, verify: bool) -> None:
    # After a crash a user may have dropped a different file under the same name, so a
    # recovery only removes what the interrupted run stored.
    if verify and os.path.lexists(source):
        try:
            if sha256_regular_file(source) != sha256:
                return
        except OSError:
            return  # no longer a regular file we can read: the next run sets it aside
    with contextlib.suppress(FileNotFoundError):
        os.unlink(source)


def _remove_empty_dirs(source_dir: Path) -> None:
    if not source_dir.exists():
        return
    for root, dirs, files in os.walk(source_dir, topdown=False):
        if Path(root) != source_dir and not dirs and not files:
            with contextlib.suppress(OSError):
                os.rmdir(root)


# --- journal -------------------------------------------------------------------------


def _write_journal(journal_dir: Path, journal: dict) -> None:
    journal_dir.mkdir(parents=True, exist_ok=True)
    # json.dumps uses the C encoder; json.dump does not.
    write_text_atomically(journal_dir / f"{journal['run_id']}.json", json.dumps(journal))


def recover_interrupted_ingestions(layout: StoreLayout) -> list[str]:
    """Finish every ingestion a crash interrupted (call under the writer lock); returns their run ids."""
    for registry in (layout.images_registry, layout.rejections_registry):
        registry_parts.recover_compaction(registry)
        for stray in registry.glob(".part-*.tmp"):
            stray.unlink(missing_ok=True)  # a part never renamed into place holds nothing committed
    journal_dir = layout.journal_dir
    if not journal_dir.exists():
        return []
    for stray in journal_dir.glob(".*.tmp"):
        stray.unlink(missing_ok=True)  # a journal never committed: its run did nothing
    recovered = []
    for path in sorted(journal_dir.glob("*.json")):
        journal = json.loads(path.read_text(encoding="utf-8"))
        logger.warning("Finishing ingestion run %s that was interrupted", journal["run_id"])
        _apply(layout, journal, recovering=True)
        recovered.append(journal["run_id"])
    return recovered


def read_images_registry(registry_dir: Path) -> pd.DataFrame:
    """The images registry under ``registry_dir`` as one DataFrame (empty, with its columns, if none)."""
    return registry_parts.read_registry(Path(registry_dir) / "images", schema=IMAGES_SCHEMA)
