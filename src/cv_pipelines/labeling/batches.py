"""Batches of images to label: which images, and the batch folder that records them.

A batch folder ``batch_<UTC timestamp>/`` holds ``manifest.parquet`` (the images),
``filelist.txt`` (their store paths, one per line) and ``info.yaml`` (batch_id,
label_set, created_at, num_images, cvat_task_id, status). It is written under a
temporary name and renamed into place once its CVAT task exists, so a batch folder
always names a real task.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from cv_pipelines.files.atomic import write_text_atomically
from cv_pipelines.registries.schemas import BATCHES_SCHEMA

BatchStatus = Literal["open", "pulled"]
_PENDING_PREFIX = ".pending_"


@dataclass
class BatchInfo:
    """A batch's ``info.yaml``: what it holds, its CVAT task and its status."""

    batch_id: str
    label_set: str
    created_at: str  # ISO 8601, UTC
    num_images: int
    cvat_task_id: int | None
    status: BatchStatus
    pulled_at: str | None = None
    jobs_completed: int = 0
    jobs_total: int = 0

    def to_yaml(self) -> str:
        """The ``info.yaml`` text."""
        return yaml.safe_dump(asdict(self), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> BatchInfo:
        """Read an ``info.yaml`` text."""
        return cls(**yaml.safe_load(text))


def new_batch_id(now: datetime | None = None) -> str:
    """``batch_<UTC time to the millisecond>Z``: sorts by creation time."""
    now = now or datetime.now(UTC)
    return f"batch_{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z"


def select_batch_images(
    images: pd.DataFrame,
    *,
    labeled_ids: set[str],
    excluded_ids: set[str],
    in_open_batches: set[str],
    batch_size: int,
    selection: Literal["newest", "random"] = "newest",
    seed: int = 0,
) -> pd.DataFrame:
    """Images not labeled for the label set, not excluded and not in an open batch.

    ``newest``: the most recently ingested first (ties broken by image id, so the
    choice is deterministic). ``random``: a sample that depends only on the seed and
    the image ids, not on the order of the registry.
    """
    if images.empty:
        return images
    blocked = labeled_ids | excluded_ids | in_open_batches
    candidates = images[~images["image_id"].isin(blocked)].drop_duplicates("image_id")
    if selection == "newest":
        ordered = candidates.sort_values(["ingested_at", "image_id"], ascending=[False, True])
    else:
        keys = candidates["image_id"].map(lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        ordered = candidates.assign(_key=keys).sort_values("_key").drop(columns="_key")
    return ordered.head(batch_size).reset_index(drop=True)


def stage_batch_folder(batches_dir: Path, batch_id: str, label_set: str, images: pd.DataFrame) -> Path:
    """Write the batch's manifest and file list under a temporary name; returns that folder."""
    pending = batches_dir / f"{_PENDING_PREFIX}{batch_id}"
    shutil.rmtree(pending, ignore_errors=True)
    pending.mkdir(parents=True)
    manifest = images[["image_id", "path", "width", "height", "format", "original_name"]].copy()
    manifest.insert(0, "batch_id", batch_id)
    manifest.insert(1, "label_set", label_set)
    pq.write_table(pa.Table.from_pandas(manifest, preserve_index=False), pending / "manifest.parquet")
    (pending / "filelist.txt").write_text("".join(f"{p}\n" for p in manifest["path"]), encoding="utf-8")
    return pending


def commit_batch_folder(batches_dir: Path, pending: Path, info: BatchInfo) -> Path:
    """Give the staged folder its info.yaml and its final name (one atomic rename)."""
    write_text_atomically(pending / "info.yaml", info.to_yaml())
    final = batches_dir / info.batch_id
    os.replace(pending, final)
    return final


def pending_batch_folders(batches_dir: Path) -> list[Path]:
    """Batch folders a crash left before their task was confirmed."""
    return sorted(batches_dir.glob(f"{_PENDING_PREFIX}*")) if batches_dir.exists() else []


def pending_batch_id(pending: Path) -> str:
    """The batch id of a staged folder."""
    return pending.name.removeprefix(_PENDING_PREFIX)


def read_batch_info(batch_dir: Path) -> BatchInfo:
    """A batch folder's ``info.yaml``."""
    return BatchInfo.from_yaml((batch_dir / "info.yaml").read_text(encoding="utf-8"))


def update_batch_info(batch_dir: Path, info: BatchInfo) -> None:
    """Replace a batch folder's ``info.yaml`` (atomic rename)."""
    write_text_atomically(batch_dir / "info.yaml", info.to_yaml())


def read_manifest(batch_dir: Path) -> pd.DataFrame:
    """A batch folder's images (``manifest.parquet``)."""
    return pq.read_table(batch_dir / "manifest.parquet").to_pandas()


def batch_registry_row(info: BatchInfo, batch_path: str) -> pa.Table:
    """The batches registry's row of one batch; saved by key (the batch id), so it is replaced as its status changes."""
    row = {
        "batch_id": info.batch_id,
        "label_set": info.label_set,
        "created_at": datetime.fromisoformat(info.created_at),
        "num_images": info.num_images,
        "cvat_task_id": info.cvat_task_id,
        "status": info.status,
        "path": batch_path,
    }
    return pa.Table.from_pylist([row], schema=BATCHES_SCHEMA)
