"""Start-up of the ``kedro`` command line: this working tree against a baseline commit, same machine, same run.

    .venv/bin/python bench/bench_cli.py [--baseline main] [--runs 5]

Two throwaway copies of the project in a temporary folder (nothing in the checkout): the
working tree as it is (A) and ``git archive <baseline>`` (B), each with its own git
repository, ``data/`` and MLflow store (made by the warm-up). Each command runs as a
whole ``kedro`` process of this venv, in each copy, ``--runs`` times after one warm-up
each, A and B in turn (A B, B A, ...: a drift of the machine's speed hits both), timed
from start to exit:

- ``kedro --help`` and ``kedro registry list`` (goal: under 2 s);
- ``kedro run --pipelines ingestion``: an untracked pipeline (mlflow.yml's
  ``tracking.disable_tracking.pipelines``), on an empty drop zone (goal: under 3 s);
- ``kedro run --pipelines evaluation``: a tracked one, in a project with nothing trained:
  kedro-mlflow's set-up, then the project's check stops it with its one sentence (exit
  status 2), so this is the start-up every tracked run pays before its first node.

Printed: median, min and max wall seconds of each, the ratio of the medians A/B, and the
load average before and after (the CPU may be shared).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from loadavg import load_reported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import OFFLINE_ENV, PROJECT_DIRS, PROJECT_FILES  # noqa: E402

COMMANDS = {
    "kedro --help": (["--help"], 0, 2.0),
    "kedro registry list": (["registry", "list"], 0, 2.0),
    "kedro run --pipelines ingestion (untracked)": (["run", "--pipelines", "ingestion"], 0, 3.0),
    "kedro run --pipelines evaluation (tracked, to its check)": (["run", "--pipelines", "evaluation"], 2, None),
}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def git(*args: str, cwd: Path) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True).stdout


def project_from(source: Path, target: Path) -> Path:
    """The project's code and configuration of ``source`` in ``target``, an empty ``data/``, a git repository."""
    target.mkdir(parents=True)
    for name in PROJECT_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    for name in PROJECT_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, ignore=IGNORED)
    (target / "data").mkdir()
    git("init", "-q", "-b", "main", cwd=target)
    for key, value in (("user.name", "bench"), ("user.email", "bench@localhost"), ("commit.gpgsign", "false")):
        git("config", key, value, cwd=target)
    git("add", "-A", cwd=target)
    git("commit", "-q", "-m", "bench copy", cwd=target)
    return target


def baseline_tree(ref: str, target: Path) -> Path:
    archive = git("archive", "--format=tar", ref, cwd=REPO)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def timed(kedro: Path, args: list[str], cwd: Path, env: dict[str, str], status: int) -> float:
    started = time.perf_counter()
    done = subprocess.run([str(kedro), *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != status:
        raise SystemExit(f"`kedro {' '.join(args)}` in {cwd} exited {done.returncode}, not {status}:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="the commit to compare with (B)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command on each side")
    args = parser.parse_args()

    kedro = Path(sys.executable).with_name("kedro")
    baseline_commit = git("rev-parse", "--short", args.baseline, cwd=REPO).decode().strip()
    with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp_name:
        tmp = Path(tmp_name)
        sides = {
            "A": project_from(REPO, tmp / "working-tree"),
            "B": project_from(baseline_tree(args.baseline, tmp / "baseline-src"), tmp / "baseline"),
        }
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_TRACKING", "KEDRO_"))}
        envs = {
            side: {**environment, **OFFLINE_ENV, "PYTHONPATH": "src", "CV_PIPELINES_PROJECT_ROOT": str(root),
                   "YOLO_CONFIG_DIR": str(root / ".ultralytics")}
            for side, root in sides.items()
        }
        print(f"A: the working tree of {REPO}; B: {args.baseline} ({baseline_commit}); {args.runs} runs each after "
              "one warm-up, A and B in turn; whole processes, wall seconds", flush=True)
        print(f"{'command':58s} {'A median':>9s} {'B median':>9s} {'A/B':>6s}   {'A min-max':>11s} {'B min-max':>11s}  goal")
        for label, (command, status, goal) in COMMANDS.items():
            times: dict[str, list[float]] = {"A": [], "B": []}
            for side in ("A", "B"):  # warm-up: file caches, and the MLflow store created on first use
                timed(kedro, command, sides[side], envs[side], status)
            for run in range(args.runs):
                for side in ("A", "B") if run % 2 == 0 else ("B", "A"):
                    times[side].append(timed(kedro, command, sides[side], envs[side], status))
            a, b = statistics.median(times["A"]), statistics.median(times["B"])
            verdict = f"< {goal:.0f} s: {'met' if a < goal else 'NOT met'}" if goal else ""
            print(f"{label:58s} {a:>9.2f} {b:>9.2f} {a / b:>6.2f}   {min(times['A']):>5.2f}-{max(times['A']):<5.2f} "
                  f"{min(times['B']):>5.2f}-{max(times['B']):<5.2f}  {verdict}", flush=True)


if __name__ == "__main__":
    with load_reported():
        main()
