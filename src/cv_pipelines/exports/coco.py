"""The COCO form of an export: ``annotations/instances_<split>.json``, and its check.

The same selection and splits as the YOLO form (``cv_pipelines.exports.selection``);
boxes in pixels, category ids 1.. in the label set's declared order.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from cv_pipelines.exports.errors import ExportCheckError
from cv_pipelines.exports.selection import SPLITS, ExportPlan


def coco_json(plan: ExportPlan, split: str) -> bytes:
    """COCO detection JSON of one split: boxes in pixels, category ids 1.. in declared order."""
    images = plan.images[plan.images["split"] == split].sort_values("file_name")
    number = {image_id: i for i, image_id in enumerate(images["image_id"], start=1)}
    boxes = plan.boxes[plan.boxes["split"] == split].copy()
    boxes["number"] = boxes["image_id"].map(number)
    boxes = boxes.sort_values(["number", "class_id", "x_min", "y_min", "x_max", "y_max"], kind="stable")
    document = {
        "info": {"description": f"{plan.label_set} export, split {split}"},
        "images": [
            {"id": number[image_id], "file_name": name, "width": int(width), "height": int(height)}
            for image_id, name, width, height in zip(
                images["image_id"], images["file_name"], images["width"], images["height"], strict=True
            )
        ],
        "annotations": [
            {
                "id": i,
                "image_id": int(image),
                "category_id": int(class_id) + 1,
                "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                "area": round((x1 - x0) * (y1 - y0), 3),
                "iscrowd": 0,
                "segmentation": [],
            }
            for i, (image, class_id, x0, y0, x1, y1) in enumerate(
                zip(
                    boxes["number"],
                    boxes["class_id"],
                    boxes["x_min"],
                    boxes["y_min"],
                    boxes["x_max"],
                    boxes["y_max"],
                    strict=True,
                ),
                start=1,
            )
        ],
        "categories": [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(plan.classes, start=1)],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def check_coco_export(export_dir: Path) -> dict[str, int]:
    """Load every ``instances_<split>.json`` with pycocotools and find each image file.

    Raises ``ExportCheckError`` naming the file or image that does not hold; returns
    the images and annotations it saw.
    """
    from pycocotools.coco import COCO

    export_dir = Path(export_dir)
    counts = {"images": 0, "annotations": 0}
    for split in SPLITS:
        annotation_file = export_dir / "annotations" / f"instances_{split}.json"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
                coco = COCO(str(annotation_file))
        except Exception as exc:
            raise ExportCheckError(f"pycocotools cannot load {annotation_file.name}: {exc}") from None
        for image in coco.loadImgs(coco.getImgIds()):
            if not (export_dir / "images" / split / image["file_name"]).is_file():
                raise ExportCheckError(
                    f"{annotation_file.name} lists {image['file_name']}, which is missing from images/{split}"
                )
        for annotation in coco.loadAnns(coco.getAnnIds()):
            image = coco.imgs[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image["width"] + 1e-3 or y + h > image["height"] + 1e-3:
                raise ExportCheckError(f"{annotation_file.name}: a box of {image['file_name']} lies outside the image")
        counts["images"] += len(coco.imgs)
        counts["annotations"] += len(coco.anns)
    return counts
