"""The packaged model through ONNX Runtime against Ultralytics' own ``predict`` (PyTorch), CPU, same threads.

    .venv/bin/python bench/bench_inference.py [--project DIR | --weights best.pt] [--threads 1 2]
                                              [--images 60] [--rounds 3] [--conf 0.25]

The model, a trained one that finds boxes (so decoding and NMS are timed too), one of:

- ``--project DIR``: the registered ``@champion`` of a project (``make demo`` leaves one in
  the checkout), from its MLflow store or ``MLFLOW_TRACKING_URI``: its packaged model and
  the ``best.pt`` packaged in it. The version must carry ``onnx_threads`` in its logged
  configuration (versions packaged since that key was added; MLflow drops load-time keys a
  model was not logged with), else the script stops and says so;
- ``--weights best.pt``: a trained checkpoint, packaged here as the deployment pipeline
  packages it (``packaging.build_package``: the same ONNX export and configuration);
- neither (the default): a small model trained here first, in a throwaway copy of the
  project in a temporary folder, as the tests' learned template is (160 demo images of
  128 px, YOLOv8 at half yolov8n's width, 20 epochs; about a minute on 2 cores), then
  packaged as above.

Images: the test split of the project's latest export with ``--project``, else demo images
of a seed no training used (``--image-size`` px). One image per call, as the service sees
them, thresholds ``--conf`` / IoU of the model's configuration for all. For each thread
count of ``--threads`` (default 1 and 2), every side runs at that count:

- baseline: ``YOLO(best.pt).predict(image)``, Ultralytics' pre-processing, PyTorch forward
  pass and NMS, given the decoded image, with ``torch.set_num_threads(n)``;
- packaged model: ``mlflow.pyfunc.load_model(uri, model_config={"onnx_threads": n})``,
  ``use_onnx: true``: JPEG bytes in, detections DataFrame out (so it also pays for the
  JPEG decode and the DataFrame, the baseline does not), ONNX Runtime with n intra-op threads;
- for reference, the same packaged model with ``use_onnx: false`` (Ultralytics inside,
  the same torch threads).

Every thread count printed is read back from the libraries after the timing (torch's
``get_num_threads()``, each ONNX Runtime session's own options); a mismatch stops the
script. Ultralytics resets torch's threads when its predictor is set up (``select_device``),
so the warm-up runs first and the count is set after it. Each method runs its images in
one block per round (no other library's threads spinning in between), the order rotating
between rounds; printed per method and thread count: images/s (median over the rounds),
p50 and p95 latency of one call (over every call), boxes found; the load average before
and after. Goal: ONNX Runtime at least 1.5x Ultralytics' predict at each thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadavg import load_reported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(1, str(REPO))

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

#: The tests' learned recipe (tests/support/projects.py): the cheapest measured that learns.
TRAIN = """
import json, sys
from pathlib import Path
from cv_pipelines.commands.main_job import _run_pipeline
from kedro.framework.startup import bootstrap_project
root = Path(sys.argv[1])
bootstrap_project(root)
_run_pipeline(root, "training", None, {"training": json.loads(sys.argv[2])})
"""


def demo_images(folder: Path, count: int, size: int) -> list[bytes]:
    from cv_pipelines.demo.synthetic import generate_demo_dataset

    generate_demo_dataset(folder, num_images=count, image_size=size, seed=3)
    return [path.read_bytes() for path in sorted(folder.rglob("*.jpg"))][:count]


def export_test_images(project: Path, count: int) -> list[bytes]:
    exports = sorted(project.glob("data/exports/*/images/test"), key=lambda p: p.stat().st_mtime)
    return [p.read_bytes() for p in sorted(exports[-1].iterdir()) if p.is_file()][:count] if exports else []


def train_small_model(tmp: Path) -> Path:
    """best.pt of the tests' learned recipe, trained in a throwaway copy of the project."""
    from tests.conftest import make_project_copy, project_env
    from tests.support.projects import LEARNED_DEMO, LEARNED_TRAINING
    from tests.test_training import BUILD_EXPORT

    root = make_project_copy(tmp / "project")
    env = project_env(root)
    started = time.perf_counter()
    demo = [f"demo_data.{key}={value}" for key, value in LEARNED_DEMO.items()]
    for command in ([sys.executable, "-c", BUILD_EXPORT.replace('"test"', "None"), str(root), *demo],
                    [sys.executable, "-c", TRAIN, str(root), json.dumps(LEARNED_TRAINING)]):
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"training the benchmark's model failed:\n{done.stderr[-3000:]}")
    [weights] = sorted((root / "data/models/training").glob("*/weights/best.pt"))
    print(f"trained {weights.relative_to(root)} ({LEARNED_DEMO['num_images']} demo images of "
          f"{LEARNED_DEMO['image_size']} px, {LEARNED_TRAINING['epochs']} epochs) in {time.perf_counter() - started:.0f} s",
          flush=True)
    return weights


def package_here(weights: Path, tmp: Path, example: bytes) -> Path:
    """A packaged model saved in ``tmp`` as the deployment pipeline logs it: its ONNX export, code and configuration."""
    import mlflow
    import pandas as pd

    from cv_pipelines.config.loader import section_parameters
    from cv_pipelines.models import packaging

    deployment = section_parameters("deployment", root=REPO)
    staged, onnx, config = packaging.build_package(weights, "yolo", tmp / "package", deployment, tmp)
    path = tmp / "packaged"
    mlflow.pyfunc.save_model(
        path, python_model=str(packaging.PACKAGED_MODEL_CODE), artifacts={"weights": str(staged), "onnx": str(onnx)},
        model_config=config, signature=packaging.signature(config["conf"], config["iou"], config["max_det"]),
        input_example=pd.DataFrame({"image": [example]}), pip_requirements=packaging.pinned_requirements(),
    )
    return path


def champion_of(project: Path, tmp: Path) -> Path:
    """The project's ``@champion`` downloaded into ``tmp``; stops when it predates ``onnx_threads``."""
    import mlflow

    from cv_pipelines.config.loader import section_parameters

    store = project / "data/mlflow/mlflow.db"
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        if not store.exists():
            raise SystemExit(f"{project} has no MLflow store (data/mlflow/mlflow.db); run `make demo` there first")
        mlflow.set_tracking_uri(f"sqlite:///{store}")
    name = section_parameters("deployment", root=project).model_name
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@champion", dst_path=str(tmp / "champion")))
    logged = mlflow.models.Model.load(local).flavors["python_function"].get(mlflow.pyfunc.MODEL_CONFIG) or {}
    if "onnx_threads" not in logged:
        raise SystemExit(f"{name}@champion was packaged before its configuration carried onnx_threads, so ONNX Runtime's "
                         "threads cannot be set at load time; deploy a newer version, or use --weights with its best.pt.")
    return local


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--project", type=Path, help="a project with a registered @champion")
    source.add_argument("--weights", type=Path, help="a trained Ultralytics best.pt (packaged here)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts, both sides alike")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=256, help="side of the demo images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold of all methods")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp / "ultralytics"))
        if args.project:
            model_path, origin = champion_of(args.project.resolve(), tmp), f"{args.project}: @champion"
        else:
            weights = args.weights or train_small_model(tmp)
            example = demo_images(tmp / "example", 1, args.image_size)[0]
            model_path, origin = package_here(Path(weights), tmp, example), str(args.weights or "trained here")
        measure(args, tmp, model_path, origin)


def measure(args: argparse.Namespace, tmp: Path, model_path: Path, origin: str) -> None:
    import cv2
    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from cv_pipelines.config.offline import ultralytics_settings_offline

    ultralytics_settings_offline()
    from ultralytics import YOLO

    images = (export_test_images(args.project, args.images) if args.project else []) or demo_images(
        tmp / "images", args.images, args.image_size)
    decoded = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in images]
    [weights] = sorted(model_path.rglob("artifacts/*.pt"))
    config = mlflow.models.Model.load(model_path).flavors["python_function"][mlflow.pyfunc.MODEL_CONFIG]
    imgsz, iou = int(config["imgsz"]), float(config["iou"])
    ultralytics = YOLO(str(weights), task="detect")
    packaged = {n: mlflow.pyfunc.load_model(str(model_path), model_config={"onnx_threads": n}) for n in args.threads}
    packaged_torch = mlflow.pyfunc.load_model(str(model_path), model_config={"use_onnx": False})
    params = {"conf": args.conf, "iou": iou}

    def ultralytics_one(index: int) -> int:
        return len(ultralytics.predict(decoded[index], imgsz=imgsz, conf=args.conf, iou=iou, device="cpu",
                                       verbose=False)[0].boxes)

    def packaged_one(model) -> Callable[[int], int]:
        return lambda index: len(model.predict(pd.DataFrame({"image": [images[index]]}), params=params))

    def ort_threads(model) -> int:
        return model.unwrap_python_model().detector.session.get_session_options().intra_op_num_threads

    def warm_up(methods: dict[str, Callable[[int], int]]) -> None:
        for method in methods.values():
            for index in range(min(5, len(images))):
                method(index)

    # Set-up: Ultralytics' predictors (each resets torch's threads once, when created), first-call allocations.
    warm_up({"ultralytics": ultralytics_one, "torch inside": packaged_one(packaged_torch),
             **{f"onnx {n}": packaged_one(model) for n, model in packaged.items()}})
    results: list[dict[str, Any]] = []
    for threads in args.threads:
        methods = {
            "ultralytics predict (PyTorch)": ultralytics_one,
            "packaged model, ONNX Runtime": packaged_one(packaged[threads]),
            "packaged model, Ultralytics inside": packaged_one(packaged_torch),
        }
        torch.set_num_threads(threads)
        warm_up(methods)  # at this thread count: torch's new pool
        names = list(methods)
        rates: dict[str, list[float]] = {name: [] for name in names}
        latencies: dict[str, list[float]] = {name: [] for name in names}
        boxes = dict.fromkeys(names, 0)
        for round_number in range(args.rounds):
            boxes = dict.fromkeys(names, 0)
            for name in names[round_number % 3:] + names[:round_number % 3]:
                total = 0.0
                for index in range(len(images)):
                    started = time.perf_counter()
                    boxes[name] += methods[name](index)
                    took = time.perf_counter() - started
                    total += took
                    latencies[name].append(took)
                rates[name].append(len(images) / total)
        read_back = {"torch": torch.get_num_threads(), "onnxruntime": ort_threads(packaged[threads])}
        if read_back != {"torch": threads, "onnxruntime": threads}:
            raise SystemExit(f"asked for {threads} thread(s) on both sides, the libraries report {read_back}")
        for name in names:
            results.append({"threads": threads, "method": name, "rate": statistics.median(rates[name]),
                            "p50": percentile(latencies[name], 0.5) * 1000, "p95": percentile(latencies[name], 0.95) * 1000,
                            "boxes": boxes[name]})
        if not all(boxes.values()):
            raise SystemExit(f"a method found no box on {len(images)} images ({boxes}): the model learned nothing to time")

    print(f"{len(images)} images, imgsz {imgsz}, one image per call, CPU, conf {args.conf}, iou {iou}, "
          f"{args.rounds} rounds; model: {origin}; threads read back from torch and each ONNX Runtime session")
    print(f"{'threads':>7s}  {'method':36s} {'images/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'boxes/round':>11s}")
    for row in results:
        print(f"{row['threads']:>7d}  {row['method']:36s} {row['rate']:>9.1f} {row['p50']:>8.1f} {row['p95']:>8.1f} "
              f"{row['boxes']:>11d}")
    for threads in args.threads:
        rate = {row["method"]: row["rate"] for row in results if row["threads"] == threads}
        ratio = rate["packaged model, ONNX Runtime"] / rate["ultralytics predict (PyTorch)"]
        print(f"threads {threads}: ONNX Runtime packaged / Ultralytics predict {ratio:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    with load_reported():
        main()
