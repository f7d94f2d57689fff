"""Snapshot cost after a small batch, against one `dvc add` of the whole store.

    .venv/bin/python bench/bench_snapshot.py [--images 100000] [--batch 10]

Builds a store of N small images in two temporary git+DVC repositories (hard links, so
the bytes exist once), versions each once (sharded snapshot / single-target
`dvc add`), then adds the same 10 images to both and times:

- the sharded snapshot of cv_pipelines (re-add changed shards, push, commit, tag);
- a single `dvc add` of the whole store folder (no push, no commit): the baseline.

Goal: the snapshot at least 5x faster, and not growing with the store. Nothing is
written into the checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cv_pipelines.dataset_versions import snapshot_dataset

import sys

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


def snapshot(root: Path) -> float:
    started = time.perf_counter()
    result = snapshot_dataset(
        root, store_dir=Path("data/store/images"), registry_dir=Path("data/registry"), label_set="bench",
        message="bench snapshot",
    )
    assert result.committed, result.summary()
    elapsed = time.perf_counter() - started
    print(f"    (snapshot re-added {len(result.changed_targets)} pointer file(s))")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_snapshot_") as tmp:
        work = Path(tmp)
        sharded, single = work / "sharded", work / "single"
        init_repo(sharded)
        init_repo(single)
        print(f"Writing a store of {args.images:,} small images ...", flush=True)
        started = time.perf_counter()
        files = write_store(sharded / "data/store/images", range(args.images))
        mirror(files, sharded / "data/store/images", single / "data/store/images")
        print(f"  {time.perf_counter() - started:.0f} s")

        print("Versioning the whole store once in each repository ...", flush=True)
        first_sharded = snapshot(sharded)
        first_single = dvc_add_whole_store(single)
        print(f"  first sharded snapshot {first_sharded:.1f} s, first single dvc add {first_single:.1f} s")

        new = write_store(sharded / "data/store/images", range(10**9, 10**9 + args.batch))
        mirror(new, sharded / "data/store/images", single / "data/store/images")
        after_sharded = snapshot(sharded)
        after_single = dvc_add_whole_store(single)

        print(f"\nAfter adding {args.batch} images to a store of {args.images:,} (same run):")
        print(f"  sharded snapshot (add changed shards + push + commit + tag): {after_sharded:7.2f} s")
        print(f"  single `dvc add` of the whole store (baseline, no push)     : {after_single:7.2f} s")
        print(f"  speed-up baseline / snapshot                               : {after_single / after_sharded:7.1f}x"
              "  (goal >= 5x)")


if __name__ == "__main__":
    main()
