"""What an export looks like: its health report, and a sample of its images with their boxes.

The health report (``health_table``, ``health_figure``) counts images and boxes per
split and class and shows box sizes and aspects, flagging tiny and huge boxes; each
export keeps a copy in its ``health/`` folder (``health_report_files``). The sample
(``sample_figure``) is drawn from a written export's own files, the way training
will read them.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cv_pipelines.exports.selection import SPLITS, ExportPlan, member_mask
from cv_pipelines.exports.versions import ExportRef

#: A box under this fraction of its image's area is "tiny": 0.1% is about 20x20 pixels
#: once Ultralytics letterboxes the image to its default 640 pixels, under three cells
#: of the finest (stride 8) detection grid, where recall drops and where stray clicks
#: of an annotator end up.
TINY_BOX_AREA = 0.001
#: A box over this fraction of its image's area is "huge": it is nearly the whole
#: frame, usually an image-level tag drawn as a box or a box dragged by mistake.
HUGE_BOX_AREA = 0.9

#: How many images the sample picture shows: enough to see the boxes fit, cheap to draw.
SAMPLE_IMAGES = 8

ALL_CLASSES = "(all classes)"


def health_table(plan: ExportPlan) -> pd.DataFrame:
    """Images and boxes per split and class, box size and aspect, tiny and huge boxes.

    One row per split (train, val, test, all) and class, plus an ``(all classes)`` row
    per split that also counts images without boxes. Box area is a fraction of the
    image's area; aspect is width / height in pixels; quantiles are p10, median, p90.
    """
    boxes = plan.boxes.assign(
        area=plan.boxes["w"] * plan.boxes["h"],
        aspect=(plan.boxes["x_max"] - plan.boxes["x_min"]) / (plan.boxes["y_max"] - plan.boxes["y_min"]),
    )
    rows = []
    for split in (*SPLITS, "all"):
        split_images = plan.images if split == "all" else plan.images[plan.images["split"] == split]
        split_boxes = boxes if split == "all" else boxes[boxes["split"] == split]
        for name in (*plan.classes, ALL_CLASSES):
            chosen = split_boxes if name == ALL_CLASSES else split_boxes[split_boxes["label"] == name]
            row: dict[str, Any] = {
                "split": split,
                "class": name,
                "images": len(split_images) if name == ALL_CLASSES else int(chosen["image_id"].nunique()),
                "boxes": len(chosen),
                "images_without_boxes": (
                    int((~member_mask(split_images["image_id"], split_boxes["image_id"].tolist())).sum())
                    if name == ALL_CLASSES
                    else None
                ),
            }
            for column in ("area", "aspect"):
                values = chosen[column].to_numpy()
                quantiles = np.quantile(values, [0.1, 0.5, 0.9]) if len(values) else [np.nan] * 3
                for label, value in zip(("p10", "median", "p90"), quantiles, strict=True):
                    row[f"{column}_{label}"] = round(float(value), 6)
            row["tiny_boxes"] = int((chosen["area"] < TINY_BOX_AREA).sum())
            row["huge_boxes"] = int((chosen["area"] > HUGE_BOX_AREA).sum())
            rows.append(row)
    table = pd.DataFrame(rows)
    table["images_without_boxes"] = table["images_without_boxes"].astype("Int64")
    return table


def health_figure(plan: ExportPlan):
    """Boxes per class and split, images with and without boxes, box area and aspect."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg renders the PNG

    figure = Figure(figsize=(12, 8), dpi=100)
    (counts_axis, images_axis), (area_axis, aspect_axis) = figure.subplots(2, 2)
    counts = plan.counts()
    positions = np.arange(len(plan.classes))
    width = 0.8 / len(SPLITS)
    for i, split in enumerate(SPLITS):
        heights = [counts["boxes"][split][name] for name in plan.classes]
        counts_axis.bar(positions + i * width, heights, width, label=split)
    counts_axis.set_xticks(positions + width, plan.classes, rotation=30, ha="right")
    counts_axis.set_title(f"{plan.label_set}: boxes per class and split")
    counts_axis.legend()

    with_boxes = [counts["images"][s] - counts["images_without_boxes"][s] for s in SPLITS]
    background = [counts["images_without_boxes"][s] for s in SPLITS]
    images_axis.bar(SPLITS, with_boxes, label="with boxes")
    images_axis.bar(SPLITS, background, bottom=with_boxes, label="without boxes")
    images_axis.set_title("images per split")
    images_axis.legend()

    areas = (plan.boxes["w"] * plan.boxes["h"]).to_numpy()
    area_axis.hist(np.clip(areas, 1e-6, 1), bins=np.logspace(-6, 0, 49))
    for threshold, label in ((TINY_BOX_AREA, "tiny"), (HUGE_BOX_AREA, "huge")):
        area_axis.axvline(threshold, color="red", linestyle="--")
        area_axis.text(threshold, 1, f" {label}", color="red", transform=area_axis.get_xaxis_transform(), va="top")
    area_axis.set_xscale("log")
    area_axis.set_title("box area (fraction of the image)")

    aspects = ((plan.boxes["x_max"] - plan.boxes["x_min"]) / (plan.boxes["y_max"] - plan.boxes["y_min"])).to_numpy()
    aspect_axis.hist(np.clip(aspects, 0.01, 100), bins=np.logspace(-2, 2, 41))
    aspect_axis.axvline(1.0, color="gray", linestyle=":")
    aspect_axis.set_xscale("log")
    aspect_axis.set_title("box aspect (width / height, pixels)")
    figure.tight_layout()
    return figure


def health_report_files(table: pd.DataFrame, figure) -> dict[str, bytes]:
    """The health report as the files kept in an export's ``health/`` folder."""
    image = io.BytesIO()
    figure.savefig(image, format="png")
    return {"health.csv": table.to_csv(index=False).encode(), "health.png": image.getvalue()}


# --- the sample picture ---------------------------------------------------------------------

#: A box to draw: (label, cx, cy, w, h), normalised to the image as training loads it.
SampleBox = tuple[str, float, float, float, float]


def sample_images(export: ExportRef, count: int = SAMPLE_IMAGES) -> tuple[list[tuple[str, str, list[SampleBox]]], int]:
    """The first ``count`` images of ``export`` in image-id order, those with boxes first; and its image count.

    Each is ``(split, file name, boxes)``, the boxes read back from the export's own
    label files (YOLO) or ``instances_<split>.json`` (COCO). Image-id order is a
    content hash: an arbitrary but stable pick that does not move between runs.
    """
    classes = [str(name) for name in export.info.get("classes", [])]
    # A file is named <image id>.<ext>, and ids have one length: name order is id order.
    files = sorted((name, split) for split in SPLITS for name in _listdir(export.path / "images" / split))
    coco = _coco_boxes(export.path) if export.info.get("format") == "coco" else None
    with_boxes: list[tuple[str, str, list[SampleBox]]] = []
    without: list[tuple[str, str, list[SampleBox]]] = []
    for name, split in files:
        if coco is not None:
            boxes = coco.get((split, name), [])
        else:
            boxes = _yolo_boxes(export.path / "labels" / split / f"{name.rsplit('.', 1)[0]}.txt", classes)
        (with_boxes if boxes else without).append((split, name, boxes))
        if len(with_boxes) >= count:
            break
    return (with_boxes + without)[:count], len(files)


def sample_figure(export: ExportRef, count: int = SAMPLE_IMAGES) -> Any:
    """A matplotlib Figure of a few images of ``export`` with their exported boxes.

    The images are drawn after EXIF orientation, the frame the labels are normalised
    in and the pixels Ultralytics trains on; see ``sample_images`` for the pick.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg renders the PNG
    from PIL import Image, ImageOps

    sample, total = sample_images(export, count)
    columns = 4
    rows = max(1, -(-len(sample) // columns))
    figure = Figure(figsize=(3 * columns, 3.2 * rows), dpi=80)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colours = {str(name): f"C{i % 10}" for i, name in enumerate(export.info.get("classes", []))}
    for axis, (split, name, boxes) in zip(axes, sample, strict=False):
        with Image.open(export.path / "images" / split / name) as opened:
            picture = ImageOps.exif_transpose(opened).convert("RGB")
        axis.imshow(picture)
        width, height = picture.size
        for label, cx, cy, w, h in boxes:
            corner = ((cx - w / 2) * width, (cy - h / 2) * height)
            _draw_box(axis, label, corner, (w * width, h * height), colours.get(label, "white"))
        axis.set_title(f"{split} · {name[:10]} · {len(boxes)} box(es)", fontsize=8)
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle(f"{export.name}: {len(sample)} of {total} images")
    figure.tight_layout()
    return figure


def _draw_box(axis: Any, label: str, corner: tuple[float, float], size: tuple[float, float], colour: str) -> None:
    from matplotlib.patches import Rectangle

    axis.add_patch(Rectangle(corner, size[0], size[1], fill=False, edgecolor=colour, linewidth=1.5))
    text_style = {"facecolor": colour, "edgecolor": "none", "pad": 1}
    axis.text(corner[0], corner[1], label, color="white", fontsize=7, va="bottom", bbox=text_style)


def _listdir(folder: Path) -> list[str]:
    return os.listdir(folder) if folder.is_dir() else []


def _yolo_boxes(label_file: Path, classes: list[str]) -> list[SampleBox]:
    """The boxes of one YOLO label file, with their class names."""
    if not label_file.is_file() or label_file.stat().st_size == 0:
        return []
    boxes = []
    for line in label_file.read_text(encoding="utf-8").splitlines():
        class_id, cx, cy, w, h = line.split()
        index = int(class_id)
        boxes.append((classes[index] if index < len(classes) else class_id, float(cx), float(cy), float(w), float(h)))
    return boxes


def _coco_boxes(export_dir: Path) -> dict[tuple[str, str], list[SampleBox]]:
    """``(split, file name) -> boxes`` of a COCO export, normalised like YOLO labels."""
    found: dict[tuple[str, str], list[SampleBox]] = {}
    for split in SPLITS:
        annotation_file = export_dir / "annotations" / f"instances_{split}.json"
        if not annotation_file.is_file():
            continue
        document = json.loads(annotation_file.read_text(encoding="utf-8"))
        images = {image["id"]: image for image in document["images"]}
        names = {category["id"]: category["name"] for category in document["categories"]}
        for annotation in document["annotations"]:
            image = images[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            width, height = float(image["width"]), float(image["height"])
            box = (names.get(annotation["category_id"], "?"), (x + w / 2) / width, (y + h / 2) / height)
            found.setdefault((split, image["file_name"]), []).append((*box, w / width, h / height))
    return found
