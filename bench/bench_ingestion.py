"""Ingestion speed against the floor of reading and hashing the same files.

    .venv/bin/python bench/bench_ingestion.py [--images 10000] [--append-rows 1000000]

Part 1 drops N JPEGs of about 50-150 KB and reports ingestion images/s and its ratio to
the floor measured in the same run: reading and SHA-256-hashing the same files in one
Python process (goal: ratio <= 1.5).

Part 2 adds 100 images to a registry of 1,000,000 synthetic rows and to an empty one,
and reports both times and their ratio (goal: about 1, i.e. the cost does not grow
with the registry).

Everything happens in a temporary folder; nothing is written into the checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from loadavg import load_reported
from PIL import Image

from cv_pipelines.config.loader import section_parameters
from cv_pipelines.images.ingestion import IMAGES_SCHEMA, IngestionJob, StoreLayout, ingest_images
from cv_pipelines.registries import parts as registry_parts


def make_jpegs(folder: Path, count: int, seed: int = 0) -> int:
    """JPEGs of roughly 50-150 KB: smooth gradients plus noise, like photos compress."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    base = np.linspace(0, 255, 600, dtype=np.float32)
    for i in range(count):
        w, h = int(rng.integers(360, 540)), int(rng.integers(270, 400))
        gradient = (base[:w][None, :, None] * rng.uniform(0.3, 1.0, size=3)) + base[:h][:, None, None] * 0.3
        noise = rng.normal(0, rng.uniform(18, 40), size=(h, w, 3))
        pixels = np.clip(gradient + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=int(rng.integers(85, 96)))
        data = buffer.getvalue()
        (folder / f"sub{i % 10}").mkdir(exist_ok=True)
        (folder / f"sub{i % 10}" / f"img_{i:05d}.jpg").write_bytes(data)
        total += len(data)
    return total


def floor_read_and_hash(folder: Path) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                hashlib.sha256(handle.read()).hexdigest()
            count += 1
    return time.perf_counter() - started, count


def clone_drop(master: Path, drop: Path) -> None:
    """A fresh drop zone of hard links to the master files (ingestion consumes its input)."""
    shutil.rmtree(drop, ignore_errors=True)
    for root, _, files in os.walk(master):
        target = drop / Path(root).relative_to(master)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(os.path.join(root, name), target / name)


def settings(project: Path, drop: Path, **kw) -> IngestionJob:
    layout = StoreLayout(
        project_root=project,
        store_dir=Path("data/store/images"),
        registry_dir=Path("data/registry"),
        quarantine_dir=Path("data/quarantine"),
    )
    return IngestionJob(layout, drop, section_parameters("ingestion", show_progress=False, **kw))


def bench_throughput(work: Path, images: int, workers: int) -> None:
    master = work / "master"
    print(f"Making {images} JPEGs ...", flush=True)
    total_bytes = make_jpegs(master, images)
    print(f"  {total_bytes / images / 1024:.0f} KB each on average, {total_bytes / 2**20:.0f} MiB in all")

    drop = work / "project/data/incoming"
    clone_drop(master, drop)
    floor_read_and_hash(drop)  # warm the page cache for both measurements alike
    floor_s, count = floor_read_and_hash(drop)

    result = ingest_images(settings(work / "project", drop, workers=workers))
    assert result.new == images, result.summary()
    ingest_s = result.seconds

    # A store past a few hundred thousand images already has all 65,536 shard folders;
    # on an empty store, creating them (a mkdir costs ~40 us here) is a one-time cost.
    populated = work / "project_populated"
    store = populated / "data/store/images"
    for first in range(256):
        for second in range(256):
            os.makedirs(store / f"{first:02x}" / f"{second:02x}")
    clone_drop(master, populated / "data/incoming")
    floor_read_and_hash(populated / "data/incoming")
    warm = ingest_images(settings(populated, populated / "data/incoming", workers=workers))
    assert warm.new == images, warm.summary()

    single = work / "project_single"
    clone_drop(master, single / "data/incoming")
    floor_read_and_hash(single / "data/incoming")
    one = ingest_images(settings(single, single / "data/incoming", workers=1))

    print("\nIngestion throughput (same files, warm page cache, same run)")
    print(f"  floor: read + SHA-256 in one process        : {floor_s:6.2f} s {count / floor_s:7.0f} images/s")
    print(
        f"  ingestion, empty store ({workers} processes)        : {ingest_s:6.2f} s {images / ingest_s:7.0f} images/s"
        f"  ratio {ingest_s / floor_s:.2f}x"
    )
    print(
        f"  ingestion, store with its shard folders ({workers}p) : {warm.seconds:6.2f} s {images / warm.seconds:7.0f} images/s"
        f"  ratio {warm.seconds / floor_s:.2f}x  (goal <= 1.5x)"
    )
    print(
        f"  ingestion, empty store, 1 process           : {one.seconds:6.2f} s {images / one.seconds:7.0f} images/s"
        f"  ratio {one.seconds / floor_s:.2f}x"
    )


def bench_append(work: Path, rows: int) -> None:
    master = work / "append_master"
    make_jpegs(master, 100, seed=7)

    def timed_append(project: Path) -> float:
        clone_drop(master, project / "data/incoming")
        floor_read_and_hash(project / "data/incoming")
        started = time.perf_counter()
        result = ingest_images(settings(project, project / "data/incoming", workers=4))
        elapsed = time.perf_counter() - started
        assert result.new == 100, result.summary()
        return elapsed

    empty_s = timed_append(work / "empty_registry")

    big = work / "big_registry"
    print(f"\nWriting a registry of {rows:,} synthetic rows ...", flush=True)
    rng = np.random.default_rng(1)
    ids = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(rows)]
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "path": [f"data/store/images/{h[:2]}/{h[2:4]}/{h}.jpg" for h in ids],
            "source_id": "synthetic",
            "ingested_at": pd.Timestamp("2026-01-01", tz="UTC"),
            "width": rng.integers(100, 4000, rows).astype("int32"),
            "height": rng.integers(100, 4000, rows).astype("int32"),
            "format": "jpg",
            "size_bytes": rng.integers(10_000, 5_000_000, rows),
            "original_name": [f"img_{i}.jpg" for i in range(rows)],
            "original_path": [f"img_{i}.jpg" for i in range(rows)],
            "exif_orientation": np.ones(rows, dtype="int8"),
            "ingest_run_id": "synthetic",
        }
    )
    registry_parts.append_part(big / "data/registry/images", frame, run_id="synthetic", schema=IMAGES_SCHEMA)
    big_s = timed_append(big)
    total_rows = len(registry_parts.read_registry(big / "data/registry/images", columns=["image_id"]))
    assert total_rows == rows + 100
    print("Adding 100 images to a registry (same run)")
    print(f"  empty registry       : {empty_s * 1000:7.0f} ms")
    print(f"  {rows:,}-row registry : {big_s * 1000:7.0f} ms")
    print(f"  ratio big / empty    : {big_s / empty_s:7.2f}x  (goal: does not grow with the registry, ~1x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--append-rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["throughput", "append"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ingestion_") as tmp:
        work = Path(tmp)
        print(f"CPU cores: {os.cpu_count()}")
        if args.only in (None, "throughput"):
            bench_throughput(work, args.images, args.workers)
        if args.only in (None, "append"):
            bench_append(work, args.append_rows)


if __name__ == "__main__":
    with load_reported():
        main()
