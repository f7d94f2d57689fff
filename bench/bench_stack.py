"""The team set-up: its start-up, and a snapshot push of many new images to its S3 remote.

    .venv/bin/python bench/bench_stack.py [--images 10000] [--repeat 1]

Starts a stack of its own (``cv_pipelines.commands.stack``: PostgreSQL, SeaweedFS's S3
gateway, an MLflow server) in a temporary folder on a free port block and times:

- **start-up**: the first ``up`` (a new database cluster, new buckets) and a restart
  (``down``, then ``up`` on the same data);
- **snapshot push**: N new small images in a git+DVC repository whose default remote is
  the stack's ``dvc`` bucket. Three measurements, one right after the other, so all
  see the same machine load:
  - the snapshot (DVC-track, push, commit, tag);
  - the same snapshot with ``push=False`` in a copy of the repository (hard links), so
    the push's own share is the difference;
  - the baseline: s3fs ``put`` of the same files into the same bucket, one object each,
    as a user copying the files by hand would. It uploads the same number of objects;
    DVC also uploads one listing per shard.

- **the demo** (``--demo``): the main job (what ``make demo`` runs after the install) in
  two fresh clones of this checkout, one right after the other: the embedded default
  (SQLite MLflow, a local DVC remote) and ``--env stack`` on this stack.

Prints the medians and the ratios (push / s3fs put; stack / embedded). Nothing is written
into the checkout.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from bench_snapshot import init_repo, mirror, write_store
from loadavg import load_reported

from cv_pipelines.commands import stack as stack_command
from cv_pipelines.versioning.dataset_versions import snapshot_dataset


def free_port_block() -> int:
    for base in range(21000, 40000, 10):
        try:
            for port in range(base, base + 10):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no 10 free consecutive ports on 127.0.0.1")


def timed_start(stack) -> float:
    started = time.perf_counter()
    stack_command.up(stack, None)
    return time.perf_counter() - started


def snapshot(root: Path, push: bool) -> float:
    started = time.perf_counter()
    result = snapshot_dataset(
        root, store_dir=Path("data/store/images"), registry_dir=Path("data/registry"), label_set="bench",
        message="bench snapshot", push=push,
    )
    assert result.committed, result.summary()
    return time.perf_counter() - started


def s3fs_put(stack, values: dict[str, str], files: list[Path], root: Path, prefix: str) -> float:
    import s3fs

    fs = s3fs.S3FileSystem(
        key=values["s3_access_key_id"], secret=values["s3_secret_access_key"],
        client_kwargs={"endpoint_url": stack.s3_endpoint, "region_name": stack_command.S3_REGION},
    )
    targets = [f"{stack_command.DVC_BUCKET}/{prefix}/{path.relative_to(root).as_posix()}" for path in files]
    started = time.perf_counter()
    fs.put([str(path) for path in files], targets)
    elapsed = time.perf_counter() - started
    found = fs.find(f"{stack_command.DVC_BUCKET}/{prefix}")
    assert len(found) == len(files), (len(found), len(files))
    return elapsed


def measure_pushes(stack, values: dict[str, str], work: Path, images: int, repeat: int) -> list[tuple[float, ...]]:
    pushed, unpushed = work / "pushed", work / "unpushed"
    init_repo(pushed)
    init_repo(unpushed)
    stack_command.connect_dvc(pushed, stack, values)
    rounds = []
    for round_ in range(repeat):
        seeds = range(round_ * images, (round_ + 1) * images)  # new images each round: nothing on the remote yet
        files = write_store(pushed / "data/store/images", seeds)
        mirror(files, pushed / "data/store/images", unpushed / "data/store/images")
        with_push = snapshot(pushed, push=True)
        without_push = snapshot(unpushed, push=False)
        put = s3fs_put(stack, values, files, pushed / "data/store/images", f"baseline-{round_}")
        rounds.append((with_push, without_push, put))
        print(f"  {images:,} new images: snapshot {with_push:.1f} s (of which hashing, dvc add, commit, tag "
              f"{without_push:.1f} s), s3fs put {put:.1f} s", flush=True)
    return rounds


def demo_seconds(work: Path, stack, env_name: str | None) -> float:
    """The main job's wall time in a fresh clone of this checkout (on the stack when ``env_name``)."""
    import subprocess
    import sys

    # One folder down: the clone's committed DVC remote is a folder beside it (../../ of .dvc).
    clone = work / f"demo_{env_name or 'embedded'}" / "clone"
    checkout = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "clone", "-q", str(checkout), str(clone)], check=True)
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "cv_pipelines.commands.main_job", "--project-path", str(clone)]
    if env_name:
        stack_command.connect_dvc(clone, stack, stack.secrets())
        env["MLFLOW_TRACKING_URI"] = stack.mlflow_uri  # the bench's own port block, not conf/stack's
        command += ["--env", env_name]
    env["CV_PIPELINES_PROJECT_ROOT"] = str(clone)
    env["PYTHONPATH"] = str(clone / "src")
    started = time.perf_counter()
    subprocess.run(command, cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--demo", action="store_true", help="also time the main job, embedded and on the stack")
    args = parser.parse_args()
    demo: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory(prefix="bench_stack_", dir="/tmp") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # as root, PostgreSQL runs as the postgres user, who must reach its folder
        stack = stack_command.open_stack(work / ".stack", free_port_block())
        try:
            first = timed_start(stack)
            stack_command.down(stack)
            restart = timed_start(stack)
            print(f"Stack start-up: first {first:.1f} s (new cluster and buckets), restart {restart:.1f} s")
            rounds = measure_pushes(stack, stack.secrets(), work, args.images, args.repeat)
            if args.demo:
                demo = (demo_seconds(work, stack, None), demo_seconds(work, stack, "stack"))
        finally:
            stack_command.down(stack)
    with_push, without_push, put = (statistics.median(column) for column in zip(*rounds, strict=True))
    push = with_push - without_push
    print(f"\n{args.images:,} new images to the S3 remote (median of {args.repeat}, same run, same bucket):")
    print(f"  snapshot, whole       {with_push:7.1f} s   {with_push / put:5.2f}x the s3fs put")
    print(f"  snapshot, push only   {push:7.1f} s   {push / put:5.2f}x the s3fs put")
    print(f"  s3fs put (baseline)   {put:7.1f} s   {args.images / put:,.0f} files/s")
    if demo:
        embedded, on_stack = demo
        print(f"\nThe main job in a fresh clone: embedded {embedded:.1f} s, on the stack {on_stack:.1f} s "
              f"({on_stack / embedded:.2f}x)")


if __name__ == "__main__":
    with load_reported():
        main()
