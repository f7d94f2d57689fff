"""One cycle of the labeling loop: pull what annotators finished, open what is next.

A cycle never waits for people (unless asked to block): it asks CVAT how far each open
batch is, pulls the finished ones, and when fewer batches are open than allowed and
unlabeled images exist, creates the next batch and its CVAT task. Run it by hand,
from cron or from an orchestrator; each run moves the loop forward.

A cycle writes no registry itself: it returns the rows it pulled (:class:`CycleWrites`),
which the catalog saves by key (annotations, exclusions, then labels: an image counts
as labeled only once its boxes are in place), and only then does
:func:`mark_batches_pulled` mark the pulled batches and give the batches registry its
rows. A crash in between leaves a batch open whose rows are saved; the next cycle
pulls it again and its rows replace themselves. Every CVAT call for a step happens
before anything is written, so a CVAT fault leaves the registries and batch statuses
exactly as they were.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from cv_pipelines.annotations.coco import frames_to_rows, image_lookup_by_stem, load_coco_frames
from cv_pipelines.annotations.label_sets import describe_counts, names, unknown_labels
from cv_pipelines.annotations.labeled_rows import labeled_rows_tables
from cv_pipelines.config.parameters import LabelingParams
from cv_pipelines.config.resolvers import project_relative
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.files.locks import hold_lock
from cv_pipelines.images.ingestion import StoreLayout
from cv_pipelines.labeling.batches import (
    BatchInfo,
    batch_registry_row,
    commit_batch_folder,
    new_batch_id,
    pending_batch_folders,
    pending_batch_id,
    read_batch_info,
    read_manifest,
    select_batch_images,
    stage_batch_folder,
    update_batch_info,
)
from cv_pipelines.labeling.cvat import CvatAdapter, JobProgress
from cv_pipelines.registries.schemas import EXCLUSIONS_SCHEMA

logger = logging.getLogger(__name__)


class LabelingBusyError(RuntimeError):
    """Another labeling cycle is running on the same registries."""


@dataclass(frozen=True)
class LabelingRegistries:
    """What a cycle reads: the images, labels and exclusions registries as they are now."""

    images: pd.DataFrame
    labels: pd.DataFrame
    exclusions: pd.DataFrame


@dataclass
class CycleWrites:
    """What a cycle pulled and opened, for the catalog to save (tables keyed by ``<label set>-<batch>``)."""

    annotations: dict[str, pa.Table] = field(default_factory=dict)
    exclusions: dict[str, pa.Table] = field(default_factory=dict)
    labels: dict[str, pa.Table] = field(default_factory=dict)
    #: Batches whose task now exists (adopted or created): folder and info.
    opened: list[tuple[Path, BatchInfo]] = field(default_factory=list)
    #: Batches pulled: folder and info, marked pulled once the rows above are saved.
    pulled: list[tuple[Path, BatchInfo]] = field(default_factory=list)


@dataclass
class CycleReport:
    """What a cycle did, batch by batch, for the log and ``labeling_cycle_report``."""

    progress: dict[str, str] = field(default_factory=dict)
    pulled: dict[str, dict] = field(default_factory=dict)
    created: dict | None = None
    adopted: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: each batch's state, what was pulled and created."""
        parts = [f"{batch}: {state}" for batch, state in self.progress.items()]
        parts += [
            f"{batch}: pulled {p['labeled_images']} labeled images, {p['boxes']} boxes, {p['excluded']} excluded"
            for batch, p in self.pulled.items()
        ]
        if self.created:
            parts.append(
                f"{self.created['batch_id']}: new batch of {self.created['num_images']} images, "
                f"CVAT task {self.created['cvat_task_id']}"
            )
        parts += self.messages
        return "; ".join(parts) or "nothing to do"

    def to_dict(self) -> dict:
        """The report as plain data (YAML)."""
        return {
            "progress": self.progress,
            "pulled": self.pulled,
            "created": self.created,
            "adopted": self.adopted,
            "messages": self.messages,
            "summary": self.summary(),
        }


@dataclass
class _Cycle:
    """One cycle's configuration, folders, CVAT connection and what it has done so far."""

    params: LabelingParams
    layout: StoreLayout
    batches_dir: Path
    connect: Callable[[], CvatAdapter]
    #: The label set's classes in class-id order (``annotations.label_sets``).
    classes: tuple[str, ...]
    report: CycleReport = field(default_factory=CycleReport)
    writes: CycleWrites = field(default_factory=CycleWrites)
    _adapter: CvatAdapter | None = None
    _project_id: int | None = None

    def cvat(self) -> CvatAdapter:
        if self._adapter is None:
            self._adapter = self.connect()
        return self._adapter

    def cvat_project(self) -> int:
        if self._project_id is None:
            cvat = self.params.cvat
            self._project_id = self.cvat().ensure_project(cvat.project_name, self.classes, [cvat.exclude_tag])
        return self._project_id


def run_labeling_cycle(
    params: LabelingParams,
    registries: LabelingRegistries,
    *,
    layout: StoreLayout,
    batches_dir: Path,
    connect: Callable[[], CvatAdapter],
    lock_timeout_s: float,
    classes: Sequence[str] | None = None,
) -> tuple[CycleReport, CycleWrites]:
    """Move the labeling loop one step (see the module docstring); nothing is written to the registries.

    ``classes``: the label set's classes in class-id order (None: ``params.labels``).

    Raises:
        LabelingBusyError: another cycle kept the labeling lock for ``lock_timeout_s``.
        ConfigurationError: a finished task has boxes labeled outside ``classes``.
    """
    layout.registry.mkdir(parents=True, exist_ok=True)
    batches_dir.mkdir(parents=True, exist_ok=True)
    cycle = _Cycle(params, layout, batches_dir, connect, tuple(params.labels if classes is None else classes))
    with hold_lock(layout.registry / ".labeling.lock", timeout_s=lock_timeout_s, busy=_busy):
        _finish_pending_batches(cycle)
        open_batches = _open_batches(batches_dir, params.label_set)
        for batch_dir, info in open_batches:
            progress = cycle.cvat().job_progress(int(info.cvat_task_id or 0))
            if progress.done:
                _pull_batch(cycle, batch_dir, info)
            else:
                cycle.report.progress[info.batch_id] = f"{progress.completed}/{progress.total} jobs done"
        still_open = [(d, i) for d, i in open_batches if i.batch_id not in cycle.report.pulled]
        if params.blocking and still_open:
            _wait_and_pull(cycle, still_open)
            still_open = [(d, i) for d, i in still_open if i.batch_id not in cycle.report.pulled]
        if len(still_open) < params.max_open_batches:
            cycle.report.created = _create_next_batch(cycle, registries, still_open)
    return cycle.report, cycle.writes


def _busy(lock_path: Path, timeout_s: float) -> LabelingBusyError:
    return LabelingBusyError(f"Another labeling cycle holds {lock_path}; run again when it has finished.")


def mark_batches_pulled(writes: CycleWrites, *, project_root: Path) -> dict[str, pa.Table]:
    """Mark the pulled batches pulled (their ``info.yaml``), once their rows are saved.

    Returns:
        The batches registry's rows of every batch the cycle opened or pulled, by batch id.
    """
    rows = {info.batch_id: batch_registry_row(info, project_relative(d, project_root)) for d, info in writes.opened}
    for batch_dir, info in writes.pulled:
        info.status = "pulled"
        info.pulled_at = datetime.now(UTC).isoformat()
        update_batch_info(batch_dir, info)
        rows[info.batch_id] = batch_registry_row(info, project_relative(batch_dir, project_root))
    return rows


def open_batches_progress(
    params: LabelingParams, batches_dir: Path, *, connect: Callable[[], CvatAdapter]
) -> dict[str, JobProgress]:
    """How far CVAT's jobs are for each open batch of ``params.label_set``, by batch id; reads, writes nothing.

    What an orchestrator waits on between the cycle that opened a batch and the one that pulls it.
    """
    open_batches = _open_batches(batches_dir, params.label_set) if batches_dir.is_dir() else []
    if not open_batches:
        return {}
    cvat = connect()
    return {info.batch_id: cvat.job_progress(int(info.cvat_task_id or 0)) for _, info in open_batches}


def _open_batches(batches_dir: Path, label_set: str) -> list[tuple[Path, BatchInfo]]:
    found = []
    for batch_dir in sorted(batches_dir.glob("batch_*")):
        if (batch_dir / "info.yaml").exists():
            info = read_batch_info(batch_dir)
            if info.status == "open" and info.label_set == label_set:
                found.append((batch_dir, info))
    return found


def _finish_pending_batches(cycle: _Cycle) -> None:
    """A crash between creating a task and committing its batch folder: adopt or discard."""
    for pending in pending_batch_folders(cycle.batches_dir):
        batch_id = pending_batch_id(pending)
        task_id = cycle.cvat().find_task(batch_id, cycle.cvat_project())
        if task_id is None or cycle.cvat().job_progress(task_id).total == 0:
            if task_id is not None:
                cycle.cvat().delete_task(task_id)
            shutil.rmtree(pending)
            cycle.report.messages.append(f"discarded batch {batch_id} whose CVAT task was never completed")
            continue
        manifest = read_manifest(pending)
        _open_batch(cycle, pending, batch_id, str(manifest["label_set"].iloc[0]), len(manifest), task_id)
        cycle.report.adopted.append(batch_id)


def _create_next_batch(cycle: _Cycle, registries: LabelingRegistries, open_batches: list) -> dict | None:
    params = cycle.params
    chosen = select_batch_images(
        registries.images,
        labeled_ids=_labeled_ids(cycle, registries.labels),
        excluded_ids=_excluded_ids(cycle, registries.exclusions),
        in_open_batches={i for batch_dir, _ in open_batches for i in read_manifest(batch_dir)["image_id"]},
        batch_size=params.batch_size,
        selection=params.selection,
        seed=params.selection_seed,
    )
    if chosen.empty:
        cycle.report.messages.append(f"no unlabeled images left for label set {params.label_set!r}")
        return None
    batch_id = new_batch_id()
    pending = stage_batch_folder(cycle.batches_dir, batch_id, params.label_set, chosen)
    files = [cycle.layout.resolve(path) for path in chosen["path"]]
    share_paths = None
    if params.cvat.upload == "share":
        prefix = (params.cvat.share_root or "").strip("/")
        store = cycle.layout.store.resolve()
        share_paths = [f"{prefix}/{Path(path).resolve().relative_to(store).as_posix()}".lstrip("/") for path in files]
    try:
        project_id = cycle.cvat_project()
    except Exception:
        shutil.rmtree(pending, ignore_errors=True)  # no task of this batch can exist yet
        raise
    # From here on a failed call may still have made the task (CVAT did it, the answer was
    # lost): the pending folder stays, and the next cycle adopts that task or deletes it
    # (_finish_pending_batches), so no task is left in CVAT without its batch.
    task_id = cycle.cvat().create_task(
        name=batch_id,
        project_id=project_id,
        files=files,
        share_paths=share_paths,
        segment_size=params.cvat.segment_size,
        image_quality=params.cvat.image_quality,
    )
    _open_batch(cycle, pending, batch_id, params.label_set, len(chosen), task_id)
    return {"batch_id": batch_id, "num_images": len(chosen), "cvat_task_id": task_id}


def _labeled_ids(cycle: _Cycle, labels: pd.DataFrame) -> set[str]:
    """Labeled for the label set: in the registry, or pulled by this cycle (not saved yet)."""
    label_set = cycle.params.label_set
    labeled = set(labels.loc[labels["label_set"] == label_set, "image_id"]) if not labels.empty else set()
    for table in cycle.writes.labels.values():
        labeled |= set(table.column("image_id").to_pylist())
    return labeled


def _excluded_ids(cycle: _Cycle, exclusions: pd.DataFrame) -> set[str]:
    """Excluded for the label set (or all): in the registry, or flagged in a batch this cycle pulled."""
    excluded: set[str] = set()
    if not exclusions.empty:
        applies = exclusions["label_set"].isna() | (exclusions["label_set"] == cycle.params.label_set)
        excluded = set(exclusions.loc[applies, "image_id"])
    for table in cycle.writes.exclusions.values():
        excluded |= set(table.column("image_id").to_pylist())
    return excluded


def _open_batch(cycle: _Cycle, pending: Path, batch_id: str, label_set: str, num_images: int, task_id: int) -> None:
    """Name the staged batch folder: its CVAT task exists now (listed in the batches registry later)."""
    info = BatchInfo(
        batch_id=batch_id,
        label_set=label_set,
        created_at=datetime.now(UTC).isoformat(),
        num_images=num_images,
        cvat_task_id=task_id,
        status="open",
    )
    final = commit_batch_folder(cycle.batches_dir, pending, info)
    cycle.writes.opened.append((final, info))


def _pull_batch(cycle: _Cycle, batch_dir: Path, info: BatchInfo) -> None:
    """Export the batch's boxes and tags from CVAT into rows to save; CVAT first, nothing written."""
    task_id = int(info.cvat_task_id or 0)
    cvat = cycle.cvat()
    with tempfile.TemporaryDirectory(prefix="cvat_pull_") as tmp:
        coco_file = cvat.export_coco(task_id, Path(tmp))
        tags = cvat.frame_tags(task_id)
        annotator = cvat.annotators(task_id)
        frames = load_coco_frames(coco_file)
    label_set = cycle.params.label_set
    unknown = unknown_labels(frames, cycle.classes)
    if unknown:
        # Every pull of the cycle happens before anything is saved: refusing here writes nothing.
        raise ConfigurationError(
            f"CVAT task {task_id} ({info.batch_id}) has {sum(unknown.values())} box(es) labeled outside label set "
            f"{label_set!r} ({names(cycle.classes)}): {describe_counts(unknown)}; nothing was pulled: add "
            f"{'that label' if len(unknown) == 1 else 'those labels'} at the end of labeling.labels (the other "
            "class ids stay), or relabel those boxes in CVAT, then run again."
        )
    manifest = read_manifest(batch_dir)
    lookup = image_lookup_by_stem({row.image_id: (int(row.width), int(row.height)) for row in manifest.itertuples()})
    excluded_ids = {}
    for frame_name, tag in tags:
        found = lookup(frame_name) if tag == cycle.params.cvat.exclude_tag else None
        if found:
            excluded_ids[found[0]] = f"flagged '{tag}' in CVAT task {task_id} (frame {frame_name})"
    annotation_rows, labeled_rows, problems = frames_to_rows(
        frames, image_for_frame=lookup, labels=cycle.classes, source=f"{info.batch_id} (CVAT task {task_id})"
    )
    problems.log(logger)  # the first ones one by one, the rest as counts: a bad export floods no log
    now = datetime.now(UTC)
    annotations, labels = labeled_rows_tables(
        annotation_rows,
        labeled_rows,
        label_set=label_set,
        source_task=f"cvat:{task_id}",
        batch_id=info.batch_id,
        annotator=annotator,
        now=now,
        skip_images=set(excluded_ids),
    )
    exclusions = _exclusion_rows(excluded_ids, label_set=label_set, source=f"cvat_tag:{task_id}", now=now)
    key = f"{label_set}-{info.batch_id}"
    cycle.writes.annotations[key], cycle.writes.exclusions[key], cycle.writes.labels[key] = (
        annotations,
        exclusions,
        labels,
    )
    cycle.writes.pulled.append((batch_dir, info))
    cycle.report.pulled[info.batch_id] = {
        "cvat_task_id": task_id,
        "labeled_images": labels.num_rows,
        "boxes": annotations.num_rows,
        "excluded": exclusions.num_rows,
        "left_out": problems.sentences(),
        "clipped_boxes": problems.clipped_boxes,
    }


def _exclusion_rows(reasons: dict[str, str], *, label_set: str | None, source: str, now: datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"image_id": image_id, "label_set": label_set, "reason": reason, "source": source, "excluded_at": now}
            for image_id, reason in sorted(reasons.items())
        ],
        schema=EXCLUSIONS_SCHEMA,
    )


def _wait_and_pull(cycle: _Cycle, open_batches: list[tuple[Path, BatchInfo]]) -> None:
    """Blocking mode: poll the open batches until they are done or the wait times out."""
    params, report = cycle.params, cycle.report
    deadline = time.monotonic() + params.wait_timeout_s
    waiting = list(open_batches)
    while waiting:
        if time.monotonic() >= deadline:
            report.messages.append(
                f"stopped waiting after {params.wait_timeout_s:.0f} s (labeling.wait_timeout_s); "
                f"{len(waiting)} batch(es) still open"
            )
            return
        time.sleep(min(params.poll_interval_s, max(0.0, deadline - time.monotonic())))
        for batch_dir, info in list(waiting):
            progress = cycle.cvat().job_progress(int(info.cvat_task_id or 0))
            if progress.done:
                _pull_batch(cycle, batch_dir, info)
                report.progress.pop(info.batch_id, None)
                waiting.remove((batch_dir, info))
            else:
                report.progress[info.batch_id] = f"{progress.completed}/{progress.total} jobs done"
                logger.info("Waiting for %s: %s", info.batch_id, report.progress[info.batch_id])


def exclusions_from_csv(
    csv_file: Path, *, images: pd.DataFrame, label_set: str | None
) -> tuple[dict[str, pa.Table], list[str]]:
    """The exclusions a CSV (columns image_id, reason) lists, keyed ``csv-<file stem>``, and the rows skipped.

    Raises:
        ValueError: the file cannot be read as a CSV, or lacks a column.
    """
    try:
        frame = pd.read_csv(csv_file, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{csv_file} cannot be read as CSV ({exc}); give a CSV with columns image_id,reason") from None
    missing = {"image_id", "reason"} - set(frame.columns)
    if missing:
        raise ValueError(f"{csv_file} lacks the column(s) {', '.join(sorted(missing))}; expected image_id,reason")
    known = set(images["image_id"]) if not images.empty else set()
    problems, reasons = [], {}
    for line, (image_id, reason) in enumerate(zip(frame["image_id"], frame["reason"], strict=True), start=2):
        image_id = (image_id or "").strip()
        if image_id not in known:
            problems.append(
                f"{csv_file.name} line {line}: image id {image_id!r} is not in the images registry; row skipped"
            )
            continue
        reasons[image_id] = (reason or "").strip() or "excluded by CSV"
    rows = _exclusion_rows(reasons, label_set=label_set, source=f"csv:{csv_file.name}", now=datetime.now(UTC))
    return {f"csv-{csv_file.stem}": rows}, problems
