"""`kedro run --pipelines training` against a bare `yolo train` on the same export.

    .venv/bin/python bench/bench_training.py [--epochs 25] [--images 300] [--rounds 1]

Builds a throwaway copy of the project in a temporary folder (nothing in the checkout),
makes the demo export there (demo_data -> ingestion -> import_coco -> export, base
configuration), then times, in turn, for ``--rounds`` rounds (medians reported):

- the baseline: Ultralytics' own command line, ``yolo train`` with exactly the arguments
  the pipeline passes (read back from the pipeline run's ``args.yaml`` of a warm-up-free
  first round, so nothing differs but the wrapper);
- ``kedro run --pipelines training``: Kedro start-up, kedro-mlflow's run, the export and
  device checks, the same training, the metric history and the artifacts into MLflow.

Both run as fresh processes with the same environment (offline, Ultralytics settings of
the project copy, so its MLflow callback is off in both). Goal: ratio at most 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from loadavg import load_reported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import make_project_copy, project_env  # noqa: E402
from tests.test_training import BUILD_EXPORT  # noqa: E402

#: args.yaml keys that name where things go or are derived, not how to train.
NOT_ARGUMENTS = {"save_dir", "project", "name", "mode", "model", "data", "exist_ok"}


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{result.stderr[-3000:]}")
    return seconds


def first_run_dir(root: Path) -> Path:
    return sorted((root / "data/models/training").iterdir())[0]


def bare_command(bin_dir: Path, used: dict, run_dir: Path, tmp: Path, round_number: int) -> list[str]:
    """`yolo train` with the arguments the pipeline's run used, into a folder of its own."""
    arguments = [f"{key}={value}" for key, value in used.items() if key not in NOT_ARGUMENTS and value is not None]
    return [str(bin_dir / "yolo"), "detect", "train", f"model={used['model']}", f"data={run_dir / 'data.yaml'}",
            f"project={tmp / 'bare'}", f"name=round{round_number}", *arguments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=35, help="the demo's default")
    parser.add_argument("--images", type=int, default=300, help="demo images (the demo's default)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        root = make_project_copy(Path(tmp) / "project")
        env = project_env(root)
        build = [sys.executable, "-c", BUILD_EXPORT.replace('"test"', "None"), str(root),
                 f"demo_data.num_images={args.images}"]
        subprocess.run(build, cwd=root, env=env, check=True, capture_output=True)
        info = yaml.safe_load((root / "data/exports/demo_v1/export_info.yaml").read_text())
        print(f"export demo_v1: {info['counts']['images']} images; {args.epochs} epochs, {args.rounds} round(s)")

        kedro_command = [str(bin_dir / "kedro"), "run", "--pipelines", "training", "--params",
                         f"training.epochs={args.epochs}"]
        pipeline_times, bare_times = [], []
        used: dict = {}
        for round_number in range(args.rounds):
            # Alternate which goes first, so neither always gets the warmer file cache.
            if round_number % 2 == 0:
                pipeline_times.append(timed(kedro_command, root, env))
                used = used or yaml.safe_load((first_run_dir(root) / "args.yaml").read_text())
                bare_times.append(timed(bare_command(bin_dir, used, first_run_dir(root), Path(tmp), round_number), root, env))
            else:
                bare_times.append(timed(bare_command(bin_dir, used, first_run_dir(root), Path(tmp), round_number), root, env))
                pipeline_times.append(timed(kedro_command, root, env))
            print(f"  round {round_number + 1}: kedro run {pipeline_times[-1]:.1f} s, yolo train {bare_times[-1]:.1f} s")

        pipeline, bare = statistics.median(pipeline_times), statistics.median(bare_times)
        print(f"yolo train (baseline)         {bare:8.1f} s")
        print(f"kedro run --pipelines training {pipeline:7.1f} s")
        print(f"ratio kedro/yolo: {pipeline / bare:.3f} (goal <= 1.05); overhead {pipeline - bare:+.1f} s")


if __name__ == "__main__":
    with load_reported():
        main()
