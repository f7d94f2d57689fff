"""One cycle of the labeling loop: pull what annotators finished, open what is next.

A cycle never waits for people (unless asked to block): it asks CVAT how far each open
batch is, pulls the finished ones into the registries, and when fewer batches are open
than allowed and unlabeled images exist, creates the next batch and its CVAT task.
Run it by hand, from cron or from an orchestrator; each run moves the loop forward.

Every CVAT call for a step happens before anything is written, so a CVAT fault leaves
the registries and batch statuses exactly as they were.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
from filelock import FileLock, Timeout

from cv_pipelines.annotations.coco import frames_to_rows, image_lookup_by_stem, load_coco_frames
from cv_pipelines.images.ingestion import IMAGES_SCHEMA, writer_lock
from cv_pipelines.labeling.batches import (
    BatchInfo,
    commit_batch_folder,
    new_batch_id,
    pending_batch_folders,
    pending_batch_id,
    read_batch_info,
    read_manifest,
    select_batch_images,
    stage_batch_folder,
    update_batch_info,
    write_batch_registry_row,
)
from cv_pipelines.labeling.cvat import CvatAdapter
from cv_pipelines.registries import parts as registry_parts
from cv_pipelines.registries.schemas import ANNOTATIONS_SCHEMA, EXCLUSIONS_SCHEMA, LABELS_SCHEMA

logger = logging.getLogger(__name__)


class LabelingBusyError(RuntimeError):
    """Another labeling cycle is running on the same registries."""


@dataclass(frozen=True)
class LabelingSettings:
    project_root: Path
    store_dir: Path
    registry_dir: Path
    batches_dir: Path
    label_set: str
    labels: tuple[str, ...]
    batch_size: int = 100
    selection: str = "newest"
    selection_seed: int = 0
    max_open_batches: int = 1
    blocking: bool = False
    poll_interval_s: float = 60.0
    wait_timeout_s: float = 7 * 24 * 3600.0
    cvat_project: str = "cv_pipelines"
    segment_size: int = 100
    image_quality: int = 95
    upload: str = "upload"
    share_root: str | None = None
    exclude_tag: str = "exclude"
    lock_timeout_s: float = 600.0

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.project_root / path


@dataclass
class CycleReport:
    progress: dict[str, str] = field(default_factory=dict)
    pulled: dict[str, dict] = field(default_factory=dict)
    created: dict | None = None
    adopted: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
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
        return {
            "progress": self.progress,
            "pulled": self.pulled,
            "created": self.created,
            "adopted": self.adopted,
            "messages": self.messages,
            "summary": self.summary(),
        }


def run_labeling_cycle(settings: LabelingSettings, connect: Callable[[], CvatAdapter]) -> CycleReport:
    """Move the labeling loop one step; see the module docstring."""
    registry = settings.resolve(settings.registry_dir)
    batches_dir = settings.resolve(settings.batches_dir)
    registry.mkdir(parents=True, exist_ok=True)
    batches_dir.mkdir(parents=True, exist_ok=True)
    report = CycleReport()
    cycle_lock = FileLock(str(registry / ".labeling.lock"))
    try:
        cycle_lock.acquire(timeout=settings.lock_timeout_s)
    except Timeout:
        raise LabelingBusyError(
            f"Another labeling cycle holds {registry / '.labeling.lock'}; run again when it has finished."
        ) from None
    try:
        adapter: CvatAdapter | None = None

        def cvat() -> CvatAdapter:
            nonlocal adapter
            if adapter is None:
                adapter = connect()
            return adapter

        project_id: int | None = None

        def cvat_project() -> int:
            nonlocal project_id
            if project_id is None:
                project_id = cvat().ensure_project(settings.cvat_project, settings.labels, [settings.exclude_tag])
            return project_id

        _finish_pending_batches(settings, batches_dir, registry, cvat, cvat_project, report)
        open_batches = _open_batches(batches_dir, settings.label_set)
        for batch_dir, info in open_batches:
            progress = cvat().job_progress(int(info.cvat_task_id))
            if progress.done:
                report.pulled[info.batch_id] = _pull_batch(settings, registry, batch_dir, info, cvat())
            else:
                report.progress[info.batch_id] = f"{progress.completed}/{progress.total} jobs done"
        still_open = [(d, i) for d, i in open_batches if i.batch_id not in report.pulled]
        if settings.blocking and still_open:
            _wait_and_pull(settings, registry, still_open, cvat(), report)
            still_open = [(d, i) for d, i in still_open if i.batch_id not in report.pulled]
        if len(still_open) < settings.max_open_batches:
            report.created = _create_next_batch(settings, batches_dir, registry, still_open, cvat, cvat_project, report)
    finally:
        cycle_lock.release()
    return report


def _open_batches(batches_dir: Path, label_set: str) -> list[tuple[Path, BatchInfo]]:
    found = []
    for batch_dir in sorted(batches_dir.glob("batch_*")):
        if (batch_dir / "info.yaml").exists():
            info = read_batch_info(batch_dir)
            if info.status == "open" and info.label_set == label_set:
                found.append((batch_dir, info))
    return found


def _finish_pending_batches(settings, batches_dir, registry, cvat, cvat_project, report) -> None:
    """A crash between creating a task and committing its batch folder: adopt or discard."""
    for pending in pending_batch_folders(batches_dir):
        batch_id = pending_batch_id(pending)
        task_id = cvat().find_task(batch_id, cvat_project())
        if task_id is None or cvat().job_progress(task_id).total == 0:
            if task_id is not None:
                cvat().delete_task(task_id)
            shutil.rmtree(pending)
            report.messages.append(f"discarded batch {batch_id} whose CVAT task was never completed")
            continue
        manifest = read_manifest(pending)
        _open_batch(
            settings,
            batches_dir,
            registry,
            pending,
            batch_id,
            str(manifest["label_set"].iloc[0]),
            len(manifest),
            task_id,
        )
        report.adopted.append(batch_id)


def _create_next_batch(settings, batches_dir, registry, open_batches, cvat, cvat_project, report) -> dict | None:
    images = registry_parts.read_registry(registry / "images", schema=IMAGES_SCHEMA)
    labels = registry_parts.read_registry(registry / "labels", schema=LABELS_SCHEMA)
    exclusions = registry_parts.read_registry(registry / "exclusions", schema=EXCLUSIONS_SCHEMA)
    labeled = set(labels.loc[labels["label_set"] == settings.label_set, "image_id"])
    applies = exclusions["label_set"].isna() | (exclusions["label_set"] == settings.label_set)
    excluded = set(exclusions.loc[applies, "image_id"])
    in_open = set()
    for batch_dir, _ in open_batches:
        in_open |= set(read_manifest(batch_dir)["image_id"])
    chosen = select_batch_images(
        images,
        labeled_ids=labeled,
        excluded_ids=excluded,
        in_open_batches=in_open,
        batch_size=settings.batch_size,
        selection=settings.selection,  # type: ignore[arg-type]
        seed=settings.selection_seed,
    )
    if chosen.empty:
        report.messages.append(f"no unlabeled images left for label set {settings.label_set!r}")
        return None
    batch_id = new_batch_id()
    pending = stage_batch_folder(batches_dir, batch_id, settings.label_set, chosen)
    store = settings.resolve(settings.store_dir)
    files = [settings.project_root / path for path in chosen["path"]]
    share_paths = None
    if settings.upload == "share":
        prefix = (settings.share_root or "").strip("/")
        share_paths = [
            f"{prefix}/{Path(path).resolve().relative_to(store.resolve()).as_posix()}".lstrip("/") for path in files
        ]
    try:
        task_id = cvat().create_task(
            name=batch_id,
            project_id=cvat_project(),
            files=files,
            share_paths=share_paths,
            segment_size=settings.segment_size,
            image_quality=settings.image_quality,
        )
    except Exception:
        shutil.rmtree(pending, ignore_errors=True)
        raise
    _open_batch(settings, batches_dir, registry, pending, batch_id, settings.label_set, len(chosen), task_id)
    return {"batch_id": batch_id, "num_images": len(chosen), "cvat_task_id": task_id}


def _open_batch(settings, batches_dir, registry, pending, batch_id, label_set, num_images, task_id) -> None:
    """Name the staged batch folder and list it as open: its CVAT task exists now."""
    info = BatchInfo(
        batch_id=batch_id,
        label_set=label_set,
        created_at=datetime.now(UTC).isoformat(),
        num_images=num_images,
        cvat_task_id=task_id,
        status="open",
    )
    final = commit_batch_folder(batches_dir, pending, info)
    with writer_lock(registry, timeout_s=settings.lock_timeout_s):
        write_batch_registry_row(registry / "batches", info, _relative(settings, final))


def _pull_batch(settings, registry: Path, batch_dir: Path, info: BatchInfo, cvat: CvatAdapter) -> dict:
    """Export the batch's boxes and tags from CVAT, then write them; CVAT first, disk last."""
    task_id = int(info.cvat_task_id)
    with tempfile.TemporaryDirectory(prefix="cvat_pull_") as tmp:
        coco_file = cvat.export_coco(task_id, Path(tmp))
        tags = cvat.frame_tags(task_id)
        annotator = cvat.annotators(task_id)
        frames = load_coco_frames(coco_file)
    manifest = read_manifest(batch_dir)
    sizes = {row.image_id: (int(row.width), int(row.height)) for row in manifest.itertuples()}
    lookup = image_lookup_by_stem(sizes)
    source_task = f"cvat:{task_id}"
    excluded_ids = {}
    for frame_name, tag in tags:
        if tag == settings.exclude_tag:
            found = lookup(frame_name)
            if found:
                excluded_ids[found[0]] = f"flagged '{tag}' in CVAT task {task_id} (frame {frame_name})"
    annotation_rows, labeled_rows, problems = frames_to_rows(
        frames, image_for_frame=lookup, labels=settings.labels, source=f"{info.batch_id} (CVAT task {task_id})"
    )
    for sentence in problems.sentences():
        logger.warning(sentence)
    now = datetime.now(UTC)
    common = {"label_set": settings.label_set, "source_task": source_task, "batch_id": info.batch_id}
    annotations = pa.Table.from_pylist(
        [row | common | {"pulled_at": now} for row in annotation_rows if row["image_id"] not in excluded_ids],
        schema=ANNOTATIONS_SCHEMA,
    )
    labels = pa.Table.from_pylist(
        [
            row | common | {"annotator": annotator, "active": True, "labeled_at": now}
            for row in labeled_rows
            if row["image_id"] not in excluded_ids
        ],
        schema=LABELS_SCHEMA,
    )
    exclusions = pa.Table.from_pylist(
        [
            {
                "image_id": image_id,
                "label_set": settings.label_set,
                "reason": reason,
                "source": f"cvat_tag:{task_id}",
                "excluded_at": now,
            }
            for image_id, reason in sorted(excluded_ids.items())
        ],
        schema=EXCLUSIONS_SCHEMA,
    )
    key = f"{settings.label_set}-{info.batch_id}"
    with writer_lock(registry, timeout_s=settings.lock_timeout_s):
        registry_parts.replace_keyed_part(registry / "annotations", key, annotations)
        registry_parts.replace_keyed_part(registry / "exclusions", key, exclusions)
        # Labels last: an image counts as labeled only once its boxes are in place.
        registry_parts.replace_keyed_part(registry / "labels", key, labels)
        info.status = "pulled"
        info.pulled_at = now.isoformat()
        update_batch_info(batch_dir, info)
        write_batch_registry_row(registry / "batches", info, _relative(settings, batch_dir))
    return {
        "cvat_task_id": task_id,
        "labeled_images": labels.num_rows,
        "boxes": annotations.num_rows,
        "excluded": exclusions.num_rows,
        "left_out": problems.sentences(),
        "clipped_boxes": problems.clipped_boxes,
    }


def _wait_and_pull(settings, registry, open_batches, cvat: CvatAdapter, report: CycleReport) -> None:
    """Blocking mode: poll the open batches until they are done or the wait times out."""
    deadline = time.monotonic() + settings.wait_timeout_s
    waiting = list(open_batches)
    while waiting:
        if time.monotonic() >= deadline:
            report.messages.append(
                f"stopped waiting after {settings.wait_timeout_s:.0f} s (labeling.wait_timeout_s); "
                f"{len(waiting)} batch(es) still open"
            )
            return
        time.sleep(min(settings.poll_interval_s, max(0.0, deadline - time.monotonic())))
        for batch_dir, info in list(waiting):
            progress = cvat.job_progress(int(info.cvat_task_id))
            if progress.done:
                report.pulled[info.batch_id] = _pull_batch(settings, registry, batch_dir, info, cvat)
                report.progress.pop(info.batch_id, None)
                waiting.remove((batch_dir, info))
            else:
                report.progress[info.batch_id] = f"{progress.completed}/{progress.total} jobs done"
                logger.info("Waiting for %s: %s", info.batch_id, report.progress[info.batch_id])


def add_exclusions_from_csv(
    csv_file: Path, *, registry: Path, label_set: str | None, lock_timeout_s: float
) -> tuple[int, list[str]]:
    """Exclude the images listed in a CSV (columns image_id, reason); returns (added, problems)."""
    try:
        frame = pd.read_csv(csv_file, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{csv_file} cannot be read as CSV ({exc}); give a CSV with columns image_id,reason") from None
    missing = {"image_id", "reason"} - set(frame.columns)
    if missing:
        raise ValueError(f"{csv_file} lacks the column(s) {', '.join(sorted(missing))}; expected image_id,reason")
    known = set(
        registry_parts.read_registry(registry / "images", columns=["image_id"], schema=IMAGES_SCHEMA)["image_id"]
    )
    problems, rows = [], []
    now = datetime.now(UTC)
    for line, (image_id, reason) in enumerate(zip(frame["image_id"], frame["reason"]), start=2):
        image_id = (image_id or "").strip()
        if image_id not in known:
            problems.append(
                f"{csv_file.name} line {line}: image id {image_id!r} is not in the images registry; row skipped"
            )
            continue
        rows.append(
            {
                "image_id": image_id,
                "label_set": label_set,
                "reason": (reason or "").strip() or "excluded by CSV",
                "source": f"csv:{csv_file.name}",
                "excluded_at": now,
            }
        )
    table = pa.Table.from_pylist(rows, schema=EXCLUSIONS_SCHEMA)
    with writer_lock(registry, timeout_s=lock_timeout_s):
        registry_parts.replace_keyed_part(registry / "exclusions", f"csv-{csv_file.stem}", table)
    return table.num_rows, problems


def _relative(settings: LabelingSettings, path: Path) -> str:
    try:
        return path.resolve().relative_to(settings.project_root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
