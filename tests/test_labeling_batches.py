"""Batch selection and batch folders, without CVAT."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from cv_pipelines.labeling.batches import (
    BatchInfo,
    commit_batch_folder,
    pending_batch_folders,
    read_batch_info,
    select_batch_images,
    stage_batch_folder,
)


def registry(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"{i:064x}" for i in range(n)],
            "path": [f"data/store/images/00/00/{i:064x}.jpg" for i in range(n)],
            "ingested_at": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
            "width": 64, "height": 48, "format": "jpg", "original_name": [f"{i}.jpg" for i in range(n)],
        }
    )


def test_newest_unlabeled_unexcluded_not_open_first():
    images = registry(10)
    ids = list(images["image_id"])
    chosen = select_batch_images(
        images, labeled_ids={ids[9]}, excluded_ids={ids[8]}, in_open_batches={ids[7]}, batch_size=3
    )
    assert list(chosen["image_id"]) == [ids[6], ids[5], ids[4]]


def test_random_selection_depends_only_on_seed_and_ids():
    images = registry(50)
    first = select_batch_images(images, labeled_ids=set(), excluded_ids=set(), in_open_batches=set(),
                                batch_size=10, selection="random", seed=3)
    shuffled = images.sample(frac=1, random_state=1)
    again = select_batch_images(shuffled, labeled_ids=set(), excluded_ids=set(), in_open_batches=set(),
                                batch_size=10, selection="random", seed=3)
    other = select_batch_images(images, labeled_ids=set(), excluded_ids=set(), in_open_batches=set(),
                                batch_size=10, selection="random", seed=4)
    assert list(first["image_id"]) == list(again["image_id"])
    assert set(first["image_id"]) != set(other["image_id"])


def test_batch_folder_is_complete_or_absent(tmp_path):
    images = registry(4)
    pending = stage_batch_folder(tmp_path, "batch_20260101T000000000Z", "demo", images)
    assert not (tmp_path / "batch_20260101T000000000Z").exists()
    assert pending_batch_folders(tmp_path) == [pending]
    info = BatchInfo("batch_20260101T000000000Z", "demo", "2026-01-01T00:00:00+00:00", 4, 17, "open")
    final = commit_batch_folder(tmp_path, pending, info)
    assert pending_batch_folders(tmp_path) == []
    assert read_batch_info(final) == info
    assert (final / "filelist.txt").read_text().splitlines() == list(images["path"])
    manifest = pq.read_table(final / "manifest.parquet").to_pandas()
    assert list(manifest["image_id"]) == list(images["image_id"])
    assert set(manifest["batch_id"]) == {"batch_20260101T000000000Z"}
