"""Which images, splits and boxes an export holds, computed from the registries.

Nothing here writes a file: ``plan_export`` turns the registries into an ``ExportPlan``
that ``cv_pipelines.exports.writing`` writes as a version and
``cv_pipelines.exports.health`` reports on.

- An image's split is a pure function of its id and the split seed (``split_of``):
  adding images never moves one, so the test split stays a fair yardstick.
- Class ids follow the label set's declared order, never the data.
- Label text is sorted, so its bytes never depend on the order rows were appended in.

Example::

    plan = plan_export(images=..., annotations=..., labels=..., exclusions=...,
                       label_set="demo", classes=["circle", "square"], split_seed=0,
                       split_ratios={"train": 0.8, "val": 0.1, "test": 0.1})
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from cv_pipelines.exports.errors import ExportSelectionError

SPLITS = ("train", "val", "test")

#: Decimals of the YOLO label values: sub-pixel for any image under 10^6 pixels a side.
LABEL_DECIMALS = 6


def registry_frame(frame: pd.DataFrame | None, schema: pa.Schema) -> pd.DataFrame:
    """``frame``, or an empty frame with ``schema``'s columns when it has none.

    A registry with no parts loads as a DataFrame without columns.
    """
    if frame is None or (frame.empty and not set(schema.names) <= set(frame.columns)):
        return schema.empty_table().to_pandas()
    return frame


def split_of(image_id: str, seed: int, ratios: Mapping[str, float]) -> str:
    """The split of an image: a pure function of its id and the seed.

    ``sha256("<seed>:<image_id>")`` read as a number in [0, 1) is cut at the cumulative
    ratios in the order train, val, test. Adding images never moves one; changing the
    seed or the ratios does (both are recorded in ``export_info.yaml``).

    >>> split_of("ab" * 32, 0, {"train": 0.8, "val": 0.1, "test": 0.1})
    'train'
    """
    value = int.from_bytes(hashlib.sha256(f"{seed}:{image_id}".encode()).digest()[:8], "big") / 2**64
    cumulative = 0.0
    for split in SPLITS:
        cumulative += ratios.get(split, 0.0)
        if value < cumulative:
            return split
    # Only reached when the ratios add up to a hair under 1 through rounding.
    return [split for split in SPLITS if ratios.get(split, 0.0) > 0][-1]


@dataclass
class ExportPlan:
    """What an export holds, computed from the registries without writing anything."""

    label_set: str
    classes: list[str]
    #: image_id, path, format, width, height, split, file_name; sorted by image_id
    images: pd.DataFrame
    #: image_id, split, class_id, label, x_min..y_max (pixels, clipped), cx, cy, w, h
    #: (normalised), width, height of the image
    boxes: pd.DataFrame
    #: image_id -> YOLO label file text ("" for a background image)
    labels: dict[str, str]
    split_seed: int
    split_ratios: dict[str, float]
    #: The registry rows this export was made from (for the lineage hash).
    inputs: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Sentences about rows that were left out or adjusted.
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """Images, boxes per class and images without boxes, per split."""
        images = self.images["split"].value_counts()
        background = self.images.loc[~member_mask(self.images["image_id"], self.boxes["image_id"].tolist()), "split"]
        background = background.value_counts()
        boxes = self.boxes.groupby(["split", "label"]).size()
        return {
            "images": {split: int(images.get(split, 0)) for split in SPLITS},
            "boxes": {split: {name: int(boxes.get((split, name), 0)) for name in self.classes} for split in SPLITS},
            "images_without_boxes": {split: int(background.get(split, 0)) for split in SPLITS},
        }

    def expected_shapes(self) -> dict[str, tuple[int, int]]:
        """``file_name -> (height, width)``: the frame every label is normalised in."""
        images = self.images
        names, heights, widths = images["file_name"].tolist(), images["height"].tolist(), images["width"].tolist()
        return {name: (int(height), int(width)) for name, height, width in zip(names, heights, widths, strict=True)}


def member_mask(values: pd.Series, wanted: Iterable[str]) -> np.ndarray:
    """``values.isin(wanted)`` as a boolean array, without pandas' per-element conversion of ``wanted``."""
    wanted = wanted if isinstance(wanted, (set, frozenset)) else set(wanted)
    return np.fromiter((value in wanted for value in values.tolist()), dtype=bool, count=len(values))


def _sentence(count: int, what: str, examples: Iterable[str]) -> str:
    shown = ", ".join(list(examples)[:3])
    return f"{count} {what} (e.g. {shown})"


def _newest_labelings(labels: pd.DataFrame, label_set: str) -> pd.DataFrame:
    """Each image's newest labels row for the set; the newest row decides if it counts.

    A later row with ``active`` False retires an image's labeling, whatever came before.
    At equal times a retiring row wins.
    """
    rows = labels[labels["label_set"] == label_set]
    rows = rows.assign(
        _retired=~rows["active"].fillna(False).astype(bool),
        _source=rows["source_task"].fillna("").astype(str),
    )
    ordered = rows.sort_values(["image_id", "labeled_at", "_source", "_retired"], na_position="first", kind="stable")
    return ordered.drop_duplicates("image_id", keep="last")


def plan_export(
    *,
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    labels: pd.DataFrame,
    exclusions: pd.DataFrame,
    label_set: str,
    classes: list[str],
    split_seed: int,
    split_ratios: Mapping[str, float],
) -> ExportPlan:
    """Select the label set's actively labeled, non-excluded images and their boxes.

    An image counts when its newest labels row for ``label_set`` is active and no
    exclusion row names it (for this set, or for all sets with a null ``label_set``).
    Its boxes are those of that newest labeling. A box whose label is not in
    ``classes`` is left out and reported; a box reaching outside its image is clipped
    to it; a box with no area left, or a duplicate, is dropped and reported. Raises
    ``ExportSelectionError`` when no image qualifies.
    """
    from cv_pipelines.images.ingestion import IMAGES_SCHEMA
    from cv_pipelines.registries.schemas import ANNOTATIONS_SCHEMA, EXCLUSIONS_SCHEMA, LABELS_SCHEMA

    images = registry_frame(images, IMAGES_SCHEMA)
    annotations = registry_frame(annotations, ANNOTATIONS_SCHEMA)
    labels = registry_frame(labels, LABELS_SCHEMA)
    exclusions = registry_frame(exclusions, EXCLUSIONS_SCHEMA)
    problems: list[str] = []

    newest = _newest_labelings(labels, label_set)
    active = newest[~newest["_retired"]]
    applies = exclusions["label_set"].isna() | (exclusions["label_set"] == label_set)
    used_exclusions = exclusions[applies]
    active = active[~member_mask(active["image_id"], used_exclusions["image_id"].tolist())]
    stored = images.drop_duplicates("image_id").set_index("image_id")
    missing = sorted(set(active["image_id"]) - set(stored.index))
    if missing:
        problems.append(_sentence(len(missing), "labeled image(s) missing from the images registry left out", missing))
    active = active[member_mask(active["image_id"], stored.index.tolist())].sort_values("image_id")
    if active.empty:
        raise ExportSelectionError(
            f"no image of label set {label_set!r} is actively labeled (and not excluded) in the registries; "
            "import or label some images first (kedro run --pipelines import_coco or labeling)"
        )

    chosen = stored.loc[active["image_id"].tolist()].reset_index()
    chosen["split"] = [split_of(image_id, split_seed, split_ratios) for image_id in chosen["image_id"].tolist()]
    chosen["file_name"] = chosen["image_id"] + "." + chosen["format"].astype(str)
    chosen = chosen[["image_id", "path", "format", "width", "height", "split", "file_name"]]

    boxes, used_annotations = _boxes_of(annotations, active, chosen, label_set, classes, problems)
    label_texts = dict.fromkeys(chosen["image_id"].tolist(), "")
    # Sorted lines: a file's bytes never depend on the order rows were appended in.
    pairs = sorted(zip(boxes["image_id"].tolist(), boxes["line"].tolist(), strict=True))
    for image_id, group in itertools.groupby(pairs, key=lambda pair: pair[0]):
        label_texts[image_id] = "".join(f"{line}\n" for _, line in group)
    for split in SPLITS:
        if split_ratios.get(split, 0) > 0 and not (chosen["split"] == split).any():
            problems.append(f"split {split!r} is empty: too few images for the ratio {split_ratios[split]}")
    return ExportPlan(
        label_set=label_set,
        classes=list(classes),
        images=chosen.reset_index(drop=True),
        boxes=boxes.drop(columns="line").reset_index(drop=True),
        labels=label_texts,
        split_seed=split_seed,
        split_ratios={split: float(split_ratios.get(split, 0.0)) for split in SPLITS},
        inputs={
            "images": images[member_mask(images["image_id"], chosen["image_id"].tolist())],
            "labels": active.drop(columns=["_retired", "_source"]),
            "annotations": used_annotations,
            "exclusions": used_exclusions,
        },
        problems=problems,
    )


def _boxes_of(
    annotations: pd.DataFrame,
    active: pd.DataFrame,
    chosen: pd.DataFrame,
    label_set: str,
    classes: list[str],
    problems: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chosen images' boxes in pixels (clipped) and normalised, with their label lines."""
    source_of = active.set_index("image_id")["source_task"].fillna("").astype(str)
    rows = annotations[annotations["label_set"] == label_set]
    # Only the boxes of each image's newest labeling count.
    rows = rows[rows["image_id"].map(source_of).to_numpy() == rows["source_task"].fillna("").astype(str).to_numpy()]
    used = rows
    class_ids = {name: i for i, name in enumerate(classes)}
    known = rows["label"].isin(class_ids)
    for label, group in rows[~known].groupby("label", sort=True):
        problems.append(
            _sentence(
                len(group),
                f"box(es) labeled {label!r}, not a declared label of the set (labeling.labels), left out",
                sorted(group["image_id"].unique()),
            )
        )
    merged = rows[known].merge(chosen[["image_id", "width", "height", "split"]], on="image_id", how="inner")
    width = merged["width"].to_numpy(dtype=float)
    height = merged["height"].to_numpy(dtype=float)
    raw = {name: merged[name].to_numpy(dtype=float) for name in ("x_min", "y_min", "x_max", "y_max")}
    x0, x1 = np.clip(raw["x_min"], 0, width), np.clip(raw["x_max"], 0, width)
    y0, y1 = np.clip(raw["y_min"], 0, height), np.clip(raw["y_max"], 0, height)
    with np.errstate(invalid="ignore"):
        clipped = (x0 != raw["x_min"]) | (x1 != raw["x_max"]) | (y0 != raw["y_min"]) | (y1 != raw["y_max"])
        empty = ~((x1 > x0) & (y1 > y0))  # also true for NaN coordinates
    ids = merged["image_id"].to_numpy()
    if (clipped & ~empty).any():
        problems.append(
            _sentence(
                int((clipped & ~empty).sum()),
                "box(es) reaching outside their image clipped to it",
                sorted(set(ids[clipped & ~empty])),
            )
        )
    if empty.any():
        problems.append(
            _sentence(int(empty.sum()), "box(es) with no area inside their image left out", sorted(set(ids[empty])))
        )
    keep = ~empty
    boxes = pd.DataFrame(
        {
            "image_id": ids[keep],
            "split": merged["split"].to_numpy()[keep],
            "class_id": merged["label"].map(class_ids).to_numpy(dtype=np.int64)[keep],
            "label": merged["label"].to_numpy()[keep],
            "x_min": x0[keep],
            "y_min": y0[keep],
            "x_max": x1[keep],
            "y_max": y1[keep],
            "cx": ((x0 + x1) / 2 / width)[keep],
            "cy": ((y0 + y1) / 2 / height)[keep],
            "w": ((x1 - x0) / width)[keep],
            "h": ((y1 - y0) / height)[keep],
            "width": width[keep],
            "height": height[keep],
        }
    )
    boxes["line"] = yolo_label_lines(boxes)
    duplicated = boxes.duplicated(["image_id", "line"])
    if duplicated.any():
        problems.append(
            _sentence(
                int(duplicated.sum()), "duplicate box(es) dropped", sorted(set(boxes.loc[duplicated, "image_id"]))
            )
        )
        boxes = boxes[~duplicated]
    return boxes.sort_values(["image_id", "line"], kind="stable"), used


def yolo_label_lines(boxes: pd.DataFrame, decimals: int = LABEL_DECIMALS) -> list[str]:
    """``"<class> <cx> <cy> <w> <h>"`` per box, with a fixed number of decimals.

    >>> yolo_label_lines(pd.DataFrame({"class_id": [2], "cx": [0.5], "cy": [0.25], "w": [0.1], "h": [1.0]}))
    ['2 0.500000 0.250000 0.100000 1.000000']
    """
    pattern = f"{{}} {{:.{decimals}f}} {{:.{decimals}f}} {{:.{decimals}f}} {{:.{decimals}f}}"
    columns = [boxes[name].tolist() for name in ("class_id", "cx", "cy", "w", "h")]
    return [pattern.format(*values) for values in zip(*columns, strict=True)]
