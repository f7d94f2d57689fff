"""The packaged model through ONNX Runtime against Ultralytics' own ``predict`` (PyTorch), CPU.

    .venv/bin/python bench/bench_inference.py [--weights best.pt] [--imgsz 160] [--images 100] [--rounds 3]

Same process, same images (demo images, JPEG bytes), same image size, one image per
call (as the service sees them), thresholds conf 0.25 (``--conf``) / IoU 0.45 for both:

- baseline: ``YOLO(best.pt).predict(image, imgsz=...)``, Ultralytics' own pre-processing,
  PyTorch forward pass and NMS, given the decoded image (its ``Results`` out);
- packaged model: ``mlflow.pyfunc.load_model(...)`` of the model the deployment pipeline
  registers (saved here to a temporary folder with the same code, artifacts and
  configuration), ``use_onnx: true``: JPEG bytes in, detections DataFrame out (so it
  also pays for the JPEG decode and the DataFrame, the baseline does not);
- for reference, the same packaged model with ``use_onnx: false`` (Ultralytics inside).

Without ``--weights`` a YOLOv8n with random weights and the demo's five classes is
built from ``yolov8n.yaml`` (no download); the compute is the same as for trained
weights, only the number of boxes reaching NMS differs. The methods take turns image by
image and the median images/s over the rounds is reported, since the CPU may be shared.
Goal: ONNX Runtime at least 1.5x Ultralytics' predict.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def demo_images(folder: Path, count: int, size: int) -> list[bytes]:
    from cv_pipelines.demo.synthetic import generate_demo_dataset

    generate_demo_dataset(folder, num_images=count, image_size=size, seed=3)
    return [path.read_bytes() for path in sorted(folder.rglob("*.jpg"))][:count]


def random_weights(folder: Path, imgsz: int) -> Path:
    """A from-scratch YOLOv8n (random weights) saved as an Ultralytics checkpoint."""
    import torch
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import __version__

    # Five classes, as a training on the demo data builds it from yolov8n.yaml.
    model = DetectionModel("yolov8n.yaml", nc=5, verbose=False)
    model.names = {i: name for i, name in enumerate(["circle", "square", "triangle", "star", "ring"])}
    model.args = {"imgsz": imgsz, "task": "detect"}
    path = folder / "best.pt"
    torch.save({"model": model.half(), "train_args": {"imgsz": imgsz, "task": "detect"}, "version": __version__,
                "epoch": -1}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="an Ultralytics best.pt (default: random YOLOv8n)")
    parser.add_argument("--imgsz", type=int, default=160, help="inference size (the training default is 160)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=256, help="side of the demo images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--onnx-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its choice)")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold of both (low: more NMS work)")
    args = parser.parse_args()

    import cv2
    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from cv_pipelines.config.offline import ultralytics_settings_offline
    from cv_pipelines.models import packaging as model_packaging

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp / "ultralytics"))
        ultralytics_settings_offline()
        from ultralytics import YOLO

        images = demo_images(tmp / "images", args.images, args.image_size)
        decoded = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in images]
        weights = args.weights or random_weights(tmp, args.imgsz)
        work = tmp / "weights"
        work.mkdir()
        (work / "best.pt").write_bytes(Path(weights).read_bytes())
        info = model_packaging.checkpoint_info(work / "best.pt")
        onnx = model_packaging.export_onnx(work / "best.pt", args.imgsz)
        config = {"use_onnx": True, "names": info["names"], "imgsz": args.imgsz, "conf": args.conf, "iou": 0.45,
                  "max_det": 300, "max_image_bytes": 20_000_000, "max_image_pixels": 40_000_000}
        mlflow.pyfunc.save_model(
            tmp / "packaged", python_model=str(model_packaging.PACKAGED_MODEL_CODE),
            artifacts={"weights": str(work / "best.pt"), "onnx": str(onnx)}, model_config=config,
            signature=model_packaging.signature(args.conf), pip_requirements=model_packaging.pinned_requirements(),
        )
        packaged_onnx = mlflow.pyfunc.load_model(str(tmp / "packaged"),
                                                 model_config={"onnx_threads": args.onnx_threads})
        packaged_torch = mlflow.pyfunc.load_model(str(tmp / "packaged"), model_config={"use_onnx": False})
        ultralytics = YOLO(str(work / "best.pt"), task="detect")

        def ultralytics_one(index: int) -> int:
            return len(ultralytics.predict(decoded[index], imgsz=args.imgsz, conf=args.conf, iou=0.45, device="cpu",
                                           verbose=False)[0].boxes)

        def packaged_one(model):
            return lambda index: len(model.predict(pd.DataFrame({"image": [images[index]]})))

        methods = {
            "ultralytics predict (PyTorch)": ultralytics_one,
            "packaged model, ONNX Runtime": packaged_one(packaged_onnx),
            "packaged model, Ultralytics inside": packaged_one(packaged_torch),
        }
        for method in methods.values():  # warm-up: first-call allocations, lazy imports
            for index in range(min(5, len(images))):
                method(index)
        rates: dict[str, list[float]] = {name: [] for name in methods}
        boxes: dict[str, int] = {}
        names = list(methods)
        for _ in range(args.rounds):
            seconds = dict.fromkeys(names, 0.0)
            boxes = dict.fromkeys(names, 0)
            # Image by image, the methods in turn (order rotating): a burst of load from
            # another process on a shared CPU hits all of them alike.
            for index in range(len(images)):
                for name in names[index % 3:] + names[:index % 3]:
                    started = time.perf_counter()
                    boxes[name] += methods[name](index)
                    seconds[name] += time.perf_counter() - started
            for name in names:
                rates[name].append(len(images) / seconds[name])

        print(f"{len(images)} demo images of {args.image_size} px, imgsz {args.imgsz}, one image per call, CPU, "
              f"torch threads {torch.get_num_threads()}, ONNX Runtime threads {args.onnx_threads or 'auto'}, conf {args.conf}, {args.rounds} rounds (median); weights: "
              f"{args.weights or 'random YOLOv8n'}")
        for name, values in rates.items():
            print(f"  {name:38s} {statistics.median(values):8.1f} images/s   ({boxes[name]} boxes)")
        baseline = statistics.median(rates["ultralytics predict (PyTorch)"])
        ratio = statistics.median(rates["packaged model, ONNX Runtime"]) / baseline
        print(f"ratio ONNX Runtime packaged / Ultralytics predict: {ratio:.2f}x (goal >= 1.5x)")


if __name__ == "__main__":
    main()
