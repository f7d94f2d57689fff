"""The parity gate: does the packaged model, loaded as the registry serves it, detect what was evaluated?

Two figures on the export's frozen split, the one the evaluation measured:

- **mAP50-95** of the packaged model's detections at the evaluation's thresholds (conf
  0.001 by default, multi-label, as Ultralytics' validator counts boxes for mAP), against
  the split's labels, by Ultralytics' own matching (``DetectionValidator._process_batch``)
  and metrics (``DetMetrics``); compared with the mAP50-95 the evaluation recorded.
- **Box agreement** at the serving thresholds: the packaged model's boxes against
  Ultralytics' ``predict`` of the evaluated ``best.pt`` (square letterbox, as exported),
  matched one to one at IoU >= ``match_iou`` with the same class. The smaller of the two
  shares (of the packaged boxes matched, of the evaluated ones matched), so a missing box
  counts as much as an extra one. No boxes on either side agree fully.

The packaged model's numpy letterbox and NMS are copies of Ultralytics' (it serves
without torch); this gate is what proves the copy on every version before it is
registered. Heavy imports stay inside the functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cv_pipelines.config.parameters import ParityParams

#: A model's detections on one image: boxes (N, 4) x1, y1, x2, y2 in its pixels, scores (N,), class ids (N,).
Boxes = tuple[np.ndarray, np.ndarray, np.ndarray]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Parity:
    """What the gate measured: both mAP50-95 figures and the box counts at the serving thresholds."""

    images: int
    packaged_map50_95: float
    evaluated_map50_95: float
    packaged_boxes: int
    evaluated_boxes: int
    matched_boxes: int
    serving_conf: float

    @property
    def map_difference(self) -> float:
        """How far apart the two mAP50-95 figures are, either way."""
        return abs(self.packaged_map50_95 - self.evaluated_map50_95)

    @property
    def box_agreement(self) -> float:
        """The share of boxes matched on the side with more boxes (1.0 when neither has any)."""
        most = max(self.packaged_boxes, self.evaluated_boxes)
        return self.matched_boxes / most if most else 1.0

    def refusal(self, limits: ParityParams) -> str | None:
        """One sentence giving both figures when the packaged model fails ``limits``; None when it passes."""
        failed = []
        if self.map_difference > limits.max_map_difference:
            failed.append(
                f"its mAP50-95 is {self.packaged_map50_95:.4f} against the evaluated {self.evaluated_map50_95:.4f} "
                f"(difference {self.map_difference:.4f}, at most {limits.max_map_difference:g} allowed)"
            )
        if self.box_agreement < limits.min_box_agreement:
            failed.append(
                f"{self.box_agreement:.1%} of the boxes at conf {self.serving_conf:g} agree ({self.matched_boxes} "
                f"matched of {self.packaged_boxes} packaged and {self.evaluated_boxes} evaluated; at least "
                f"{limits.min_box_agreement:.0%} needed)"
            )
        if not failed:
            return None
        return (
            "the packaged model does not detect what the evaluated model detects on the "
            f"{self.images} images of the split: {' and '.join(failed)}"
        )

    def metrics(self) -> dict[str, float]:
        """The figures as MLflow metric names (``parity/...``)."""
        return {
            "parity/packaged_mAP50-95": self.packaged_map50_95,
            "parity/evaluated_mAP50-95": self.evaluated_map50_95,
            "parity/mAP50-95_difference": self.map_difference,
            "parity/box_agreement": self.box_agreement,
            "parity/packaged_boxes": float(self.packaged_boxes),
            "parity/evaluated_boxes": float(self.evaluated_boxes),
        }

    def report(self) -> dict[str, Any]:
        """Every figure, the two derived ones included, for ``serving_parity.yml``."""
        return {**asdict(self), "map_difference": self.map_difference, "box_agreement": self.box_agreement}


def measure_parity(
    model: Any,
    *,
    weights: Path,
    family: str,
    export_dir: Path,
    split: str,
    evaluated_map50_95: float,
    map_thresholds: dict[str, float],
    serving: dict[str, Any],
    match_iou: float,
) -> Parity:
    """Both figures for ``model`` (a loaded ``mlflow.pyfunc`` model) on ``split`` of the export at ``export_dir``.

    ``map_thresholds`` are the evaluation's ``conf`` and ``iou``; ``serving`` the deployment's
    ``conf``, ``iou``, ``max_det``, at which the boxes are compared with ``weights``
    through Ultralytics (``family`` ``yolo`` or ``rtdetr``).
    """
    images = split_images(export_dir, split)
    if not images:
        raise ValueError(f"split {split!r} of export {export_dir} has no images to measure the packaged model on")
    max_det = int(serving["max_det"])
    for_map = packaged_detections(model, images, {**map_thresholds, "max_det": max_det, "multi_label": True})
    at_serving = packaged_detections(model, images, {k: serving[k] for k in ("conf", "iou", "max_det")})
    evaluated = evaluated_detections(weights, family, images, model_imgsz(model), serving)
    matched = sum(matched_boxes(mine, theirs, match_iou) for mine, theirs in zip(at_serving, evaluated, strict=True))
    return Parity(
        images=len(images),
        packaged_map50_95=round(mean_ap50_95(for_map, [labels_of(image, export_dir, split) for image in images]), 5),
        evaluated_map50_95=round(float(evaluated_map50_95), 5),
        packaged_boxes=sum(len(scores) for _, scores, _ in at_serving),
        evaluated_boxes=sum(len(scores) for _, scores, _ in evaluated),
        matched_boxes=matched,
        serving_conf=float(serving["conf"]),
    )


def split_images(export_dir: Path, split: str) -> list[Path]:
    """The images of ``split`` in a YOLO export, by name."""
    folder = export_dir / "images" / split
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def labels_of(image: Path, export_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Class ids (N,) and boxes (N, 4, pixels x1 y1 x2 y2) of an image's YOLO label file (none when absent)."""
    from PIL import Image
    from ultralytics.data.utils import exif_size
    from ultralytics.utils.ops import xywhn2xyxy

    label = export_dir / "labels" / split / f"{image.stem}.txt"
    rows = np.loadtxt(label, ndmin=2, dtype=np.float32) if label.exists() and label.stat().st_size else None
    if rows is None:
        return np.zeros(0, dtype=np.float32), np.zeros((0, 4), dtype=np.float32)
    with Image.open(image) as opened:
        width, height = exif_size(opened)  # the size Ultralytics' loader sees, after EXIF orientation
    return rows[:, 0], xywhn2xyxy(rows[:, 1:5], w=width, h=height)


def packaged_detections(model: Any, images: list[Path], params: dict[str, Any]) -> list[Boxes]:
    """The packaged model's detections per image, as ``predict`` answers a client (one image per call)."""
    import pandas as pd

    results = []
    for image in images:
        frame = model.predict(pd.DataFrame({"image": [image.read_bytes()]}), params=params)
        results.append(
            (
                frame[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float32, copy=True).reshape(-1, 4),
                frame["score"].to_numpy(dtype=np.float32, copy=True),
                frame["class_id"].to_numpy(dtype=np.float32, copy=True),
            )
        )
    return results


def evaluated_detections(
    weights: Path, family: str, images: list[Path], imgsz: int, serving: dict[str, Any]
) -> list[Boxes]:
    """Ultralytics' ``predict`` of the evaluated weights, square-letterboxed at ``imgsz`` as exported."""
    from cv_pipelines.config.offline import no_font_download
    from cv_pipelines.models.training import ultralytics_model

    model = ultralytics_model(weights, family)
    results = []
    with no_font_download():
        for image in images:
            [result] = model.predict(
                str(image),
                imgsz=imgsz,
                conf=serving["conf"],
                iou=serving["iou"],
                max_det=int(serving["max_det"]),
                rect=False,
                device="cpu",
                verbose=False,
            )
            boxes = result.boxes
            results.append((boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy()))
    return results


def model_imgsz(model: Any) -> int:
    """The square input size the packaged model was exported at (its ``model_config``)."""
    return int(model.model_config["imgsz"])


def matched_boxes(mine: Boxes, theirs: Boxes, match_iou: float) -> int:
    """How many of ``mine`` match one of ``theirs`` one to one at IoU >= ``match_iou``, same class."""
    import torch

    validator = _matcher(match_iou)
    if not len(mine[1]) or not len(theirs[1]):
        return 0
    correct = validator.match_predictions(
        torch.from_numpy(mine[2]), torch.from_numpy(theirs[2]), _iou(theirs[0], mine[0])
    )
    return int(correct[:, 0].sum())


def mean_ap50_95(detections: list[Boxes], labels: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """mAP50-95 of ``detections`` against ``labels`` (per image), counted as Ultralytics' validator counts it."""
    import torch
    from ultralytics.utils.metrics import DetMetrics

    validator = _matcher(None)
    metrics = DetMetrics()
    for index, ((boxes, scores, classes), (true_classes, true_boxes)) in enumerate(
        zip(detections, labels, strict=True)
    ):
        preds = {"bboxes": torch.from_numpy(boxes), "cls": torch.from_numpy(classes)}
        truth = {"bboxes": torch.from_numpy(true_boxes), "cls": torch.from_numpy(true_classes)}
        metrics.update_stats(
            {
                **validator._process_batch(preds, truth),
                "target_cls": true_classes,
                "target_img": np.unique(true_classes),
                "conf": scores,
                "pred_cls": classes,
                "im_name": str(index),
            }
        )
    metrics.process()
    return float(metrics.box.map)


def _iou(a: np.ndarray, b: np.ndarray):
    import torch
    from ultralytics.utils.metrics import box_iou

    return box_iou(torch.from_numpy(a), torch.from_numpy(b))


def _matcher(match_iou: float | None):
    """Ultralytics' DetectionValidator for its matching only: at IoU 0.5:0.95, or at ``match_iou`` alone."""
    import tempfile

    import torch
    from ultralytics.models.yolo.detect import DetectionValidator

    with tempfile.TemporaryDirectory() as folder:  # it makes its save_dir at once; nothing is written there
        validator: Any = DetectionValidator(save_dir=Path(folder), args={"plots": False})
    if match_iou is not None:
        validator.iouv = torch.tensor([match_iou])
        validator.niou = 1
    return validator
