"""Turn the registries into a versioned, deterministic, training-ready data set.

``<exports>/<label_set>_v<N>/`` holds ``dataset.yaml`` (Ultralytics format),
``export_info.yaml`` (lineage, counts, content hash), ``images/{train,val,test}/``
(hard links into the store) and ``labels/{train,val,test}/`` (YOLO text files), or
``annotations/instances_<split>.json`` for the COCO format.

- An image's split is a pure function of its id and the split seed: adding images
  never moves one, so the test split stays a fair yardstick.
- Class ids follow the label set's declared order, never the data.
- The same inputs give byte-identical files; timestamps live only in
  ``export_info.yaml``. An export whose content equals the latest one is not written
  again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: A box under this fraction of its image's area is "tiny"; over the second, "huge".
TINY_BOX_AREA, HUGE_BOX_AREA = 0.001, 0.9


class ExportCheckError(RuntimeError):
    """Ultralytics' own checks found a corrupt or missing label; the message names the image."""


@dataclass
class ExportPlan:
    """What an export holds, computed without writing anything."""

    label_set: str
    classes: list[str]
    images: pd.DataFrame  # image_id, path, format, width, height, split, file_name
    labels: dict[str, str]  # image_id -> YOLO label text (empty for background images)
    boxes: pd.DataFrame  # image_id, class_id, label, cx, cy, w, h (normalised), split
    split_seed: int
    split_ratios: dict[str, float]
    problems: list[str] = field(default_factory=list)

    def content_hash(self, fmt: str) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps({"format": fmt, "classes": self.classes}, sort_keys=True).encode())
        for row in self.images.sort_values(["split", "file_name"]).itertuples():
            digest.update(f"{row.split}/{row.file_name}:{row.image_id}\n".encode())
            digest.update(self.labels[row.image_id].encode())
        return digest.hexdigest()

    def counts(self) -> dict:
        per_split = {split: int((self.images["split"] == split).sum()) for split in SPLITS}
        per_class = {
            split: {name: int(((self.boxes["split"] == split) & (self.boxes["label"] == name)).sum()) for name in self.classes}
            for split in SPLITS
        }
        empty = {
            split: int(sum(1 for i in self.images.loc[self.images["split"] == split, "image_id"] if not self.labels[i]))
            for split in SPLITS
        }
        return {"images": per_split, "boxes": per_class, "images_without_boxes": empty}


def split_of(image_id: str, seed: int, ratios: dict[str, float]) -> str:
    """The split of an image: a pure function of its id and the seed."""
    value = int(hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()[:16], 16) / 2**64
    cumulative = 0.0
    for split in SPLITS:
        cumulative += ratios.get(split, 0.0)
        if value < cumulative:
            return split
    return SPLITS[-1] if ratios.get(SPLITS[-1], 0) > 0 else max(ratios, key=ratios.get)


def plan_export(
    *,
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    labels: pd.DataFrame,
    exclusions: pd.DataFrame,
    label_set: str,
    classes: list[str],
    split_seed: int,
    split_ratios: dict[str, float],
) -> ExportPlan:
    """Select the label set's actively labeled, non-excluded images and their boxes."""
    problems: list[str] = []
    if labels.empty:
        raise ValueError(f"no image is labeled for label set {label_set!r} yet; import or label some first")
    active = labels[(labels["label_set"] == label_set) & labels["active"].astype(bool)]
    # An image labeled twice (a relabel, an import) counts with its newest labeling only.
    newest = active.sort_values(["labeled_at", "source_task"]).drop_duplicates("image_id", keep="last")
    if not exclusions.empty:
        applies = exclusions["label_set"].isna() | (exclusions["label_set"] == label_set)
        newest = newest[~newest["image_id"].isin(set(exclusions.loc[applies, "image_id"]))]
    stored = images.drop_duplicates("image_id").set_index("image_id")
    missing = sorted(set(newest["image_id"]) - set(stored.index))
    for image_id in missing:
        problems.append(f"image {image_id} is labeled but not in the images registry; left out")
    newest = newest[newest["image_id"].isin(stored.index)]
    chosen = stored.loc[sorted(newest["image_id"])].reset_index()
    chosen["split"] = [split_of(i, split_seed, split_ratios) for i in chosen["image_id"]]
    chosen["file_name"] = chosen["image_id"] + "." + chosen["format"]

    class_ids = {name: i for i, name in enumerate(classes)}
    source_of = newest.set_index("image_id")["source_task"]
    boxes = annotations[annotations["label_set"] == label_set] if not annotations.empty else annotations
    columns = ["image_id", "class_id", "label", "cx", "cy", "w", "h", "split"]
    label_texts = dict.fromkeys(chosen["image_id"], "")
    if boxes.empty:
        normalised = pd.DataFrame(columns=columns)
    else:
        # Only the boxes of each image's newest labeling count.
        boxes = boxes[boxes["source_task"].to_numpy() == boxes["image_id"].map(source_of).to_numpy()]
        unknown = boxes[~boxes["label"].isin(class_ids)]
        for box in unknown.itertuples():
            problems.append(f"image {box.image_id}: label {box.label!r} is not in the label set; box left out")
        merged = boxes[boxes["label"].isin(class_ids)].merge(
            chosen[["image_id", "width", "height", "split"]], on="image_id", how="inner"
        )
        normalised = pd.DataFrame(
            {
                "image_id": merged["image_id"],
                "class_id": merged["label"].map(class_ids).astype(int),
                "label": merged["label"],
                "cx": (merged["x_min"] + merged["x_max"]) / 2 / merged["width"],
                "cy": (merged["y_min"] + merged["y_max"]) / 2 / merged["height"],
                "w": (merged["x_max"] - merged["x_min"]) / merged["width"],
                "h": (merged["y_max"] - merged["y_min"]) / merged["height"],
                "split": merged["split"],
            }
        )
        lines = normalised["class_id"].astype(str)
        for name in ("cx", "cy", "w", "h"):
            lines = lines + " " + normalised[name].map("{:.6f}".format)
        # Sorted lines: the file's bytes do not depend on the order rows were pulled in.
        for image_id, image_lines in lines.groupby(normalised["image_id"].to_numpy(), sort=False):
            label_texts[image_id] = "".join(f"{line}\n" for line in sorted(image_lines))
    return ExportPlan(
        label_set=label_set,
        classes=list(classes),
        images=chosen[["image_id", "path", "format", "width", "height", "split", "file_name"]],
        labels=label_texts,
        boxes=normalised.reset_index(drop=True),
        split_seed=split_seed,
        split_ratios=dict(split_ratios),
        problems=problems,
    )


def existing_versions(exports_dir: Path, label_set: str) -> list[tuple[int, Path]]:
    found = []
    if exports_dir.exists():
        for path in exports_dir.iterdir():
            match = re.fullmatch(rf"{re.escape(label_set)}_v(\d+)", path.name)
            if match and (path / "export_info.yaml").exists():
                found.append((int(match.group(1)), path))
    return sorted(found)


@dataclass
class ExportResult:
    version: int
    path: Path
    content_hash: str
    written: bool
    info: dict


def write_export(
    plan: ExportPlan,
    *,
    project_root: Path,
    exports_dir: Path,
    fmt: str = "yolo",
    lineage: dict | None = None,
) -> ExportResult:
    """Write the plan as the next version, unless the latest version already holds it."""
    content_hash = plan.content_hash(fmt)
    versions = existing_versions(exports_dir, plan.label_set)
    if versions:
        latest_version, latest_path = versions[-1]
        latest_info = yaml.safe_load((latest_path / "export_info.yaml").read_text())
        if latest_info.get("content_hash") == content_hash:
            return ExportResult(latest_version, latest_path, content_hash, False, latest_info)
    version = (versions[-1][0] if versions else 0) + 1
    final = exports_dir / f"{plan.label_set}_v{version}"
    staging = exports_dir / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    exports_dir.mkdir(parents=True, exist_ok=True)
    for stale in exports_dir.glob(f".{plan.label_set}_v*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a crash; never a version
    try:
        if fmt == "coco":
            _write_coco(plan, staging, project_root)
        else:
            _write_yolo(plan, staging, project_root)
        (staging / "dataset.yaml").write_text(
            yaml.safe_dump(
                {"path": str(final.resolve()), "train": "images/train", "val": "images/val", "test": "images/test",
                 "names": dict(enumerate(plan.classes))},
                sort_keys=False,
            )
        )
        info = {
            "version": version,
            "label_set": plan.label_set,
            "format": fmt,
            "content_hash": content_hash,
            "created_at": datetime.now(timezone.utc).isoformat(),
            **(lineage or {}),
            "split_seed": plan.split_seed,
            "split_ratios": plan.split_ratios,
            "classes": plan.classes,
            "counts": plan.counts(),
            "left_out": plan.problems,
        }
        (staging / "export_info.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(version, final, content_hash, True, info)


def _link_image(source: Path | str, target: Path | str) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(source, target)  # another file system: a copy is the only way


def _write_yolo(plan: ExportPlan, staging: Path, project_root: Path) -> None:
    for split in SPLITS:
        (staging / "images" / split).mkdir(parents=True)
        (staging / "labels" / split).mkdir(parents=True)
    root, out = str(project_root), str(staging)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    # Plain strings and os calls: this loop runs once per image of the export. (Two
    # threads, links in one and labels in the other, measured slower here.)
    for image_id, path, split, file_name in zip(
        plan.images["image_id"], plan.images["path"], plan.images["split"], plan.images["file_name"]
    ):
        _link_image(f"{root}/{path}", f"{out}/images/{split}/{file_name}")
        handle = os.open(f"{out}/labels/{split}/{image_id}.txt", flags, 0o644)
        try:
            os.write(handle, plan.labels[image_id].encode())
        finally:
            os.close(handle)


def _write_coco(plan: ExportPlan, staging: Path, project_root: Path) -> None:
    (staging / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(plan.classes)]
    for split in SPLITS:
        (staging / "images" / split).mkdir(parents=True)
        rows = plan.images[plan.images["split"] == split].sort_values("file_name")
        images, annotations = [], []
        for index, row in enumerate(rows.itertuples(), start=1):
            _link_image(project_root / row.path, staging / "images" / split / row.file_name)
            images.append({"id": index, "file_name": row.file_name, "width": int(row.width), "height": int(row.height)})
            for line in plan.labels[row.image_id].splitlines():
                cls, cx, cy, w, h = line.split()
                bw, bh = float(w) * row.width, float(h) * row.height
                x, y = float(cx) * row.width - bw / 2, float(cy) * row.height - bh / 2
                annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": int(cls) + 1,
                                    "bbox": [round(x, 3), round(y, 3), round(bw, 3), round(bh, 3)],
                                    "area": round(bw * bh, 3), "iscrowd": 0, "segmentation": []})
        (staging / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}, indent=1)
        )


def check_with_ultralytics(export_dir: Path, num_classes: int) -> dict:
    """Ultralytics' own dataset check and label loader over every image of the export.

    Raises ``ExportCheckError`` naming the first corrupt or missing label.
    """
    from ultralytics.data.utils import check_det_dataset, verify_image_label

    check_det_dataset(str(export_dir / "dataset.yaml"), autodownload=False)
    found = corrupt = 0
    for split in SPLITS:
        for image in sorted((export_dir / "images" / split).iterdir()):
            label = export_dir / "labels" / split / f"{image.stem}.txt"
            result = verify_image_label((str(image), str(label), "", False, num_classes, 0, 0, False))
            _, _, _, _, _, missing, found_one, _, bad, message = result
            if bad or missing or not found_one:
                raise ExportCheckError(
                    f"Ultralytics rejects {image.name} in {export_dir.name}/{split}: "
                    f"{message.strip() or 'label missing'}; fix its boxes or exclude the image"
                )
            found += found_one
            corrupt += bad
    return {"checked_images": found, "corrupt": corrupt}


def health_table(plan: ExportPlan) -> pd.DataFrame:
    """Images and boxes per split and class, with box size and aspect statistics."""
    rows = []
    boxes = plan.boxes.assign(area=plan.boxes["w"] * plan.boxes["h"], aspect=plan.boxes["w"] / plan.boxes["h"].clip(lower=1e-9))
    for split in SPLITS:
        split_images = plan.images[plan.images["split"] == split]
        for name in plan.classes:
            chosen = boxes[(boxes["split"] == split) & (boxes["label"] == name)]
            rows.append(
                {
                    "split": split,
                    "class": name,
                    "images": int(chosen["image_id"].nunique()),
                    "boxes": len(chosen),
                    "images_without_boxes": int(sum(1 for i in split_images["image_id"] if not plan.labels[i])),
                    "median_box_area": float(chosen["area"].median()) if len(chosen) else 0.0,
                    "median_aspect": float(chosen["aspect"].median()) if len(chosen) else 0.0,
                    "tiny_boxes": int((chosen["area"] < TINY_BOX_AREA).sum()),
                    "huge_boxes": int((chosen["area"] > HUGE_BOX_AREA).sum()),
                }
            )
    return pd.DataFrame(rows)


def health_plot(plan: ExportPlan):
    """Boxes per class and split, and the distribution of box sizes: one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (counts_axis, sizes_axis) = plt.subplots(1, 2, figsize=(11, 4))
    table = health_table(plan).pivot(index="class", columns="split", values="boxes").reindex(plan.classes)
    table[list(SPLITS)].plot.bar(ax=counts_axis)
    counts_axis.set_title(f"{plan.label_set}: boxes per class and split")
    counts_axis.set_ylabel("boxes")
    areas = (plan.boxes["w"] * plan.boxes["h"]).clip(lower=1e-6)
    if len(areas):
        sizes_axis.hist(areas, bins=30, log=True)
    sizes_axis.set_xscale("log")
    sizes_axis.set_title("box area (fraction of the image)")
    figure.tight_layout()
    return figure
