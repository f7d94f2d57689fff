"""Snapshot cost after a small batch, against one `dvc add` of the whole store.

    .venv/bin/python bench/bench_snapshot.py [--images 20000 100000] [--batch 10] [--repeat 3]

For each store size, builds a store of N small images in two temporary git+DVC
repositories (hard links, so the bytes exist once), versions each once (sharded
snapshot / single-target `dvc add`), then, ``--repeat`` times, adds the same new images
to both and times, one right after the other so both see the same machine load:

- the sharded snapshot of cv_pipelines (re-add what changed, push, commit, tag);
- a single `dvc add` of the whole store folder (no push, no commit): the baseline.

Prints the medians, their ratio, and how the snapshot time changes from the smallest
to the largest store. Goal: the snapshot at least 5x faster than the baseline, and not
growing with the store. Nothing is written into the checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from loadavg import load_reported
from PIL import Image

from cv_pipelines.versioning.dataset_versions import snapshot_dataset

# The `dvc` of this environment, whatever the caller's PATH.
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def tiny_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_store(store: Path, seeds: range) -> list[Path]:
    written = []
    for seed in seeds:
        data = tiny_png(seed)
        digest = hashlib.sha256(data).hexdigest()
        path = store / digest[:2] / digest[2:4] / f"{digest}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


def mirror(source_files: list[Path], source_root: Path, target_root: Path) -> None:
    for path in source_files:
        target = target_root / path.relative_to(source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)


def init_repo(root: Path) -> None:
    root.mkdir(parents=True)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "bench@localhost"],
        ["git", "config", "user.name", "bench"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["dvc", "config", "cache.type", "reflink,hardlink,copy"],
        ["dvc", "remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote")],
    ):
        subprocess.run(args, cwd=root, check=True, env=ENV, capture_output=True)
    os.environ["PATH"] = ENV["PATH"]
    (root / ".gitignore").write_text("")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=root, check=True)


def dvc_add_whole_store(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["dvc", "add", "-q", "data/store/images"], cwd=root, check=True, env=ENV)
    return time.perf_counter() - started


def snapshot(root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    result = snapshot_dataset(
        root, store_dir=Path("data/store/images"), registry_dir=Path("data/registry"), label_set="bench",
        message="bench snapshot",
    )
    assert result.committed, result.summary()
    return time.perf_counter() - started, len(result.changed_targets)


def measure(images: int, batch: int, repeat: int) -> tuple[float, float]:
    """Median seconds of (snapshot, single `dvc add`) after adding ``batch`` images to a
    store of ``images``."""
    with tempfile.TemporaryDirectory(prefix="bench_snapshot_") as tmp:
        work = Path(tmp)
        sharded, single = work / "sharded", work / "single"
        init_repo(sharded)
        init_repo(single)
        print(f"Store of {images:,} small images: writing ...", flush=True)
        started = time.perf_counter()
        files = write_store(sharded / "data/store/images", range(images))
        mirror(files, sharded / "data/store/images", single / "data/store/images")
        print(f"  {time.perf_counter() - started:.0f} s; versioning the whole store once in each repository ...", flush=True)
        first_sharded, _ = snapshot(sharded)
        first_single = dvc_add_whole_store(single)
        print(f"  first sharded snapshot {first_sharded:.1f} s, first single dvc add {first_single:.1f} s")

        snapshots, baselines = [], []
        for round_ in range(repeat):
            seeds = range(10**9 + round_ * batch, 10**9 + (round_ + 1) * batch)
            new = write_store(sharded / "data/store/images", seeds)
            mirror(new, sharded / "data/store/images", single / "data/store/images")
            elapsed, pointers = snapshot(sharded)
            snapshots.append(elapsed)
            baselines.append(dvc_add_whole_store(single))
            print(f"  +{batch} images: snapshot {snapshots[-1]:6.2f} s ({pointers} file(s) committed), "
                  f"single dvc add {baselines[-1]:6.2f} s", flush=True)
        return statistics.median(snapshots), statistics.median(baselines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[20_000, 100_000], help="store sizes")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {images: measure(images, args.batch, args.repeat) for images in sorted(args.images)}

    print(f"\nAfter adding {args.batch} images (median of {args.repeat}; snapshot and baseline in the same run):")
    print(f"  {'store':>9}  {'snapshot':>9}  {'single dvc add':>14}  {'speed-up':>8}")
    for images, (snap, base) in results.items():
        print(f"  {images:>9,}  {snap:>8.2f}s  {base:>13.2f}s  {base / snap:>7.1f}x  (goal >= 5x)")
    if len(results) > 1:
        (small, (snap_small, _)), *_, (large, (snap_large, _)) = results.items()
        print(f"  snapshot at {large:,} / at {small:,} images: {snap_large / snap_small:.2f}x "
              f"(store {large / small:.0f}x larger; goal: not growing)")


if __name__ == "__main__":
    with load_reported():
        main()
