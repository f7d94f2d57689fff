"""The training matrix with the SequentialRunner against the DaskRunner on 2 workers; ingestion's checks likewise.

    .venv/bin/python bench/bench_matrix_dask.py [--epochs 2] [--rounds 1] [--images 2000]

Part 1 builds a throwaway copy of the project in a temporary folder (nothing in the
checkout), makes the test environment's demo export there (24 images of 96 px), sets a
matrix of 3 small candidates (yolov8n, yolov8n at 96 px, the narrow yolov8 of
tests/support/models) and times, in turn, for ``--rounds`` rounds (medians reported):

- the baseline: ``kedro run --pipelines matrix --env test`` (SequentialRunner);
- ``kedro run --pipelines matrix --env test --runner cv_pipelines.engines.dask_runner.DaskRunner``
  with ``conf/base/dask.yml``'s LocalCluster: 2 worker processes, 1 thread each, started
  and stopped inside the command (its cost is in the figure).

Both are fresh processes with the same environment; the order alternates by round.

Part 2 (``--images 0`` skips it) times ``check_new_images`` (read, hash, check every
file; nothing written) on a synthetic drop of small JPEGs, in this process: with the
project's own pool (``ingestion.workers: 2``) and on a LocalCluster of 2 workers already
running (its start-up is printed apart), same files, same parameters.

Prints the load average before and after: other work on the machine shows in both figures.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_training import timed
from loadavg import load_reported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import make_project_copy, project_env  # noqa: E402
from tests.test_training import BUILD_EXPORT  # noqa: E402

DASK_RUNNER = "cv_pipelines.engines.dask_runner.DaskRunner"
CANDIDATES = {
    "yolov8n": {},
    "yolov8n_96": {"imgsz": 96},
    "narrow": {"model": str(REPO / "tests/support/models/yolov8-narrow.yaml")},
}


def matrix_project(folder: Path) -> tuple[Path, dict[str, str]]:
    """A project copy with the test export and the 3 candidates."""
    root = make_project_copy(folder / "project")
    env = project_env(root)
    subprocess.run([sys.executable, "-c", BUILD_EXPORT, str(root)], cwd=root, env=env, check=True, capture_output=True)
    path = root / "conf/base/parameters_matrix.yml"
    params = yaml.safe_load(path.read_text())
    params["matrix"].update(candidates=CANDIDATES, required="all")
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return root, env


def bench_matrix(epochs: int, rounds: int) -> None:
    kedro = str(Path(sys.executable).with_name("kedro"))
    with tempfile.TemporaryDirectory(prefix="bench_matrix_dask_") as tmp:
        root, env = matrix_project(Path(tmp))
        command = [kedro, "run", "--pipelines", "matrix", "--env", "test", "--params", f"training.epochs={epochs}"]
        print(f"matrix: {len(CANDIDATES)} candidates, {epochs} epoch(s) at the test environment's sizes, {rounds} round(s)")
        sequential, dask = [], []
        for number in range(rounds):
            runs = [(sequential, command), (dask, [*command, "--runner", DASK_RUNNER])]
            for times, args in runs if number % 2 == 0 else runs[::-1]:
                times.append(timed(args, root, env))
            print(f"  round {number + 1}: sequential {sequential[-1]:.1f} s, dask {dask[-1]:.1f} s", flush=True)
        base, spread = statistics.median(sequential), statistics.median(dask)
        print(f"kedro run --pipelines matrix (SequentialRunner, baseline) {base:7.1f} s")
        print(f"kedro run --pipelines matrix --runner DaskRunner (2 x 1)  {spread:7.1f} s")
        print(f"ratio dask/sequential: {spread / base:.3f} (below 1: faster on Dask)")


def make_jpegs(folder: Path, count: int) -> None:
    """Small JPEGs (about 10 KB), distinct bytes each, in 10 sub-folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        target = folder / f"sub{i % 10}" / f"img_{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue())


def bench_ingestion_checks(images: int) -> None:
    from distributed import Client, LocalCluster

    from cv_pipelines.config.loader import section_parameters
    from cv_pipelines.images.ingestion import check_new_images, list_new_images

    params = section_parameters("ingestion", root=REPO, workers=2, show_progress=False)
    with tempfile.TemporaryDirectory(prefix="bench_ingestion_dask_") as tmp:
        make_jpegs(Path(tmp) / "drop", images)
        waiting = list_new_images(Path(tmp) / "drop")
        started = time.perf_counter()
        here = check_new_images(waiting, params)
        local = time.perf_counter() - started
        started = time.perf_counter()
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            start_up = time.perf_counter() - started
            workers_import = set(client.run(lambda: __import__("cv_pipelines").__file__).values())
            started = time.perf_counter()
            there = check_new_images(waiting, params, dask_client=client)
            spread = time.perf_counter() - started
        assert there.files == here.files, "the Dask checks differ from the local ones"
        print(f"ingestion checks of {images} JPEGs (read, sha256, header checks); workers import {workers_import}")
        print(f"  process pool of 2 (baseline) {local:6.2f} s ({images / local:.0f} files/s)")
        print(f"  Dask, 2 workers x 1 thread   {spread:6.2f} s ({images / spread:.0f} files/s); cluster start {start_up:.1f} s")
        print(f"  ratio dask/pool: {spread / local:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--images", type=int, default=2000, help="synthetic drop for part 2; 0 skips it")
    args = parser.parse_args()
    bench_matrix(args.epochs, args.rounds)
    if args.images:
        bench_ingestion_checks(args.images)


if __name__ == "__main__":
    with load_reported():
        main()
