"""Turn the registries into a versioned, deterministic, training-ready data set.

``<exports>/<label_set>_v<N>/`` holds ``dataset.yaml`` (Ultralytics format),
``export_info.yaml`` (lineage, counts, content hash), ``images/{train,val,test}/``
(hard links into the store, named ``<image_id>.<ext>``), ``labels/{train,val,test}/``
(YOLO text files, empty for a background image) and ``health/`` (the health report of
that version). The COCO format writes ``annotations/instances_<split>.json`` instead of
``labels/`` and ``dataset.yaml``.

- An image's split is a pure function of its id and the split seed (``split_of``):
  adding images never moves one, so the test split stays a fair yardstick.
- Class ids follow the label set's declared order, never the data.
- The same inputs give byte-identical files; timestamps live only in
  ``export_info.yaml``. An export whose content equals the latest version's is not
  written again.
- A version is written into a hidden sibling folder, checked, and renamed into place:
  a crash or a failed check never leaves a half export under a version name.

Example::

    plan = plan_export(images=..., annotations=..., labels=..., exclusions=...,
                       label_set="demo", classes=["circle", "square"], split_seed=0,
                       split_ratios={"train": 0.8, "val": 0.1, "test": 0.1})
    result = write_export(plan, project_root=root, exports_dir=root / "data/exports",
                          check=lambda folder: check_with_ultralytics(folder, classes=plan.classes))
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from cv_pipelines.images.store import link_or_copy as _link_image  # hard link; copy across file systems

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ExportFormat = Literal["yolo", "coco"]

#: A box under this fraction of its image's area is "tiny": 0.1% is about 20x20 pixels
#: once Ultralytics letterboxes the image to its default 640 pixels, under three cells
#: of the finest (stride 8) detection grid, where recall drops and where stray clicks
#: of an annotator end up.
TINY_BOX_AREA = 0.001
#: A box over this fraction of its image's area is "huge": it is nearly the whole
#: frame, usually an image-level tag drawn as a box or a box dragged by mistake.
HUGE_BOX_AREA = 0.9

#: Decimals of the YOLO label values: sub-pixel for any image under 10^6 pixels a side.
LABEL_DECIMALS = 6
INFO_FILE = "export_info.yaml"
DATASET_FILE = "dataset.yaml"
HEALTH_DIR = "health"


class ExportSelectionError(ValueError):
    """The registries hold nothing exportable for the label set; the message says why."""


class ExportCheckError(RuntimeError):
    """Ultralytics' own checks reject the export; the message names the image and the fix."""


class ExportLockedError(RuntimeError):
    """Another export of the same label set is being written into the same folder."""


# --- inputs --------------------------------------------------------------------------------


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
        background = self.images.loc[~_member(self.images["image_id"], self.boxes["image_id"].tolist()), "split"]
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
        return {name: (int(height), int(width)) for name, height, width in zip(names, heights, widths)}


def _member(values: pd.Series, wanted: Iterable[str]) -> np.ndarray:
    """``values.isin(wanted)``, without pandas' per-element conversion of ``wanted``."""
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
    active = active[~_member(active["image_id"], used_exclusions["image_id"].tolist())]
    stored = images.drop_duplicates("image_id").set_index("image_id")
    missing = sorted(set(active["image_id"]) - set(stored.index))
    if missing:
        problems.append(_sentence(len(missing), "labeled image(s) missing from the images registry left out", missing))
    active = active[_member(active["image_id"], stored.index.tolist())].sort_values("image_id")
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
    pairs = sorted(zip(boxes["image_id"].tolist(), boxes["line"].tolist()))
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
            "images": images[_member(images["image_id"], chosen["image_id"].tolist())],
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
    return [pattern.format(*values) for values in zip(*columns)]


# --- files of an export -------------------------------------------------------------------


@dataclass
class ExportFiles:
    """Every file of an export but ``export_info.yaml``, before anything is written."""

    #: (path in the export, path of the stored image relative to the project, image id)
    links: list[tuple[str, str, str]]
    #: path in the export -> bytes, for the files the export writes itself
    texts: dict[str, bytes]
    #: the split folders to create, even when empty
    folders: list[str]

    def manifest(self) -> dict[str, str]:
        """``path -> sha256`` of every file; a stored image's sha256 is its id."""
        digests = {target: image_id for target, _, image_id in self.links}
        digests.update({path: hashlib.sha256(data).hexdigest() for path, data in self.texts.items()})
        return digests


def dataset_yaml_text(classes: list[str], path: str | None) -> str:
    """Ultralytics' data set YAML; ``path`` None leaves out the only machine-specific line."""
    document: dict[str, Any] = {"path": path} if path is not None else {}
    document |= {"train": "images/train", "val": "images/val", "test": "images/test", "names": dict(enumerate(classes))}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def export_files(plan: ExportPlan, fmt: ExportFormat = "yolo") -> ExportFiles:
    """The files an export of ``plan`` in ``fmt`` consists of."""
    images = plan.images.sort_values(["split", "file_name"])
    splits, ids = images["split"].tolist(), images["image_id"].tolist()
    links = [
        (f"images/{split}/{name}", path, image_id)
        for split, name, path, image_id in zip(splits, images["file_name"].tolist(), images["path"].tolist(), ids)
    ]
    if fmt == "yolo":
        texts = {
            f"labels/{split}/{image_id}.txt": plan.labels[image_id].encode() for split, image_id in zip(splits, ids)
        }
        folders = [f"{kind}/{split}" for kind in ("images", "labels") for split in SPLITS]
    elif fmt == "coco":
        texts = {f"annotations/instances_{split}.json": coco_json(plan, split) for split in SPLITS}
        folders = ["annotations", *(f"images/{split}" for split in SPLITS)]
    else:
        raise ValueError(f"unknown export format {fmt!r}; use 'yolo' or 'coco'")
    return ExportFiles(links=links, texts=texts, folders=folders)


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
                images["image_id"], images["file_name"], images["width"], images["height"]
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
                zip(boxes["number"], boxes["class_id"], boxes["x_min"], boxes["y_min"], boxes["x_max"], boxes["y_max"]),
                start=1,
            )
        ],
        "categories": [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(plan.classes, start=1)],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def content_hash(files: ExportFiles, *, fmt: ExportFormat, classes: list[str]) -> str:
    """SHA-256 over every file of the export but ``export_info.yaml`` and ``health/``.

    ``dataset.yaml`` counts without its ``path`` line (where the export lies on this
    machine); the health report is derived from the other files.
    """
    digest = hashlib.sha256()
    if fmt == "yolo":
        portable = hashlib.sha256(dataset_yaml_text(classes, None).encode()).hexdigest()
        digest.update(f"{DATASET_FILE} {portable}\n".encode())
    for path, file_digest in sorted(files.manifest().items()):
        digest.update(f"{path} {file_digest}\n".encode())
    for folder in sorted(files.folders):
        digest.update(f"{folder}/\n".encode())
    return digest.hexdigest()


# --- versions -----------------------------------------------------------------------------


def version_folders(exports_dir: Path, label_set: str) -> list[tuple[int, Path]]:
    """Every ``<label_set>_v<N>`` folder, complete or not, by version number."""
    pattern = re.compile(rf"{re.escape(label_set)}_v(\d+)")
    found = []
    if exports_dir.is_dir():
        for path in exports_dir.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_export(exports_dir: Path, label_set: str) -> tuple[int, Path, dict] | None:
    """The newest complete version (one with an ``export_info.yaml``) and its info."""
    for version, path in reversed(version_folders(exports_dir, label_set)):
        info_file = path / INFO_FILE
        if info_file.is_file():
            return version, path, yaml.safe_load(info_file.read_text(encoding="utf-8")) or {}
    return None


@dataclass
class ExportResult:
    """Where the export of a plan is, and whether this call wrote it."""

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
    fmt: ExportFormat = "yolo",
    lineage: Mapping[str, Any] | None = None,
    check: Callable[[Path], Mapping[str, Any]] | None = None,
    reports: Mapping[str, bytes] | None = None,
    lock_timeout_s: float = 600.0,
) -> ExportResult:
    """Write ``plan`` as the next version, unless the latest version already holds it.

    The version is written into a hidden sibling folder; ``check`` (given that folder)
    runs on it before it is renamed to ``<label_set>_v<N>``, so neither a crash nor a
    failed check leaves anything under a version name. ``reports`` (name -> bytes) go
    into ``health/``. Writers of one label set's versions take turns on a lock file.
    """
    from filelock import FileLock, Timeout

    project_root = Path(project_root)
    exports_dir = Path(exports_dir)
    files = export_files(plan, fmt)
    digest = content_hash(files, fmt=fmt, classes=plan.classes)
    exports_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(exports_dir / f".{plan.label_set}.export.lock"))
    try:
        lock.acquire(timeout=lock_timeout_s)
    except Timeout:
        raise ExportLockedError(
            f"another export of label set {plan.label_set!r} is writing into {exports_dir} and did not finish "
            f"within {lock_timeout_s:.0f} s; run again once it is done"
        ) from None
    try:
        _remove_stale_staging(exports_dir, plan.label_set)
        latest = latest_export(exports_dir, plan.label_set)
        if latest is not None and latest[2].get("content_hash") == digest:
            return ExportResult(latest[0], latest[1], digest, False, latest[2])
        versions = version_folders(exports_dir, plan.label_set)
        version = (versions[-1][0] if versions else 0) + 1
        final = exports_dir / f"{plan.label_set}_v{version}"
        staging = exports_dir / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            _write_files(files, staging, project_root)
            if fmt == "yolo":
                dataset_yaml = dataset_yaml_text(plan.classes, str(final.resolve()))
                (staging / DATASET_FILE).write_text(dataset_yaml, encoding="utf-8")
            for name, data in sorted((reports or {}).items()):
                (staging / HEALTH_DIR).mkdir(exist_ok=True)
                (staging / HEALTH_DIR / name).write_bytes(data)
            checked = dict(check(staging)) if check is not None else None
            info = {
                "version": version,
                "label_set": plan.label_set,
                "format": fmt,
                "content_hash": digest,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **dict(lineage or {}),
                "split_seed": plan.split_seed,
                "split_ratios": plan.split_ratios,
                "classes": plan.classes,
                "counts": plan.counts(),
                "check": checked,
                "problems": plan.problems,
            }
            # Last file in: a folder with an export_info.yaml is a complete version.
            info_text = yaml.safe_dump(info, sort_keys=False, allow_unicode=True)
            (staging / INFO_FILE).write_text(info_text, encoding="utf-8")
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return ExportResult(version, final, digest, True, info)
    finally:
        lock.release()


def _remove_stale_staging(exports_dir: Path, label_set: str) -> None:
    # Called under the lock: any staging folder of this label set found now was left by
    # a crash. (A regex, not a glob: ".demo_v*" would also match label set "demo_vans".)
    pattern = re.compile(rf"\.{re.escape(label_set)}_v\d+\.[0-9a-f]+\.tmp")
    for stale in exports_dir.iterdir():
        if pattern.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def _write_files(files: ExportFiles, staging: Path, project_root: Path) -> None:
    for folder in files.folders:
        (staging / folder).mkdir(parents=True, exist_ok=True)
    root, out = str(project_root), str(staging)
    # Plain strings and os calls: these loops run once per image of the export.
    for target, source, image_id in files.links:
        try:
            _link_image(f"{root}/{source}", f"{out}/{target}")
        except FileNotFoundError:
            raise ExportSelectionError(
                f"image {image_id} is registered at {source} but that file is missing from the store; "
                "restore it (dvc checkout / dvc pull) or exclude the image"
            ) from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for target, data in files.texts.items():
        handle = os.open(f"{out}/{target}", flags, 0o644)
        try:
            if data:
                os.write(handle, data)
        finally:
            os.close(handle)


# --- checks -------------------------------------------------------------------------------


def check_with_ultralytics(
    export_dir: Path,
    *,
    classes: list[str] | None = None,
    expected_shapes: Mapping[str, tuple[int, int]] | None = None,
    project_root: Path | None = None,
    workers: int | None = None,
) -> dict[str, int]:
    """Ultralytics' own data set check and label loader over every image of a YOLO export.

    ``check_det_dataset`` reads ``dataset.yaml`` (pointed at ``export_dir``, so a
    staging folder can be checked before it is renamed), then ``verify_image_label``
    loads every image and label file the way training will. Raises ``ExportCheckError``
    naming the image when one is corrupt, has no label file, is not in the frame its
    labels were normalised in (``expected_shapes``: file name -> (height, width)), or
    had to be repaired by Ultralytics. Returns the counts it saw.
    """
    from concurrent.futures import ThreadPoolExecutor

    from cv_pipelines.config.offline import no_font_download, ultralytics_settings_offline

    export_dir = Path(export_dir)
    ultralytics_settings_offline(project_root)
    from ultralytics.data import utils as data_utils  # heavy import kept local

    described = yaml.safe_load((export_dir / DATASET_FILE).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="export_check_") as tmp:
        check_yaml = Path(tmp) / DATASET_FILE
        check_yaml.write_text(yaml.safe_dump({**described, "path": str(export_dir.resolve())}, sort_keys=False))
        # check_det_dataset ends by fetching a plotting font from the internet.
        with no_font_download():
            try:
                data = data_utils.check_det_dataset(str(check_yaml), autodownload=False)
            except Exception as exc:
                raise ExportCheckError(
                    f"Ultralytics' data set check rejects {_export_name(export_dir)}/{DATASET_FILE}: {exc}"
                ) from None
    if classes is not None and data["names"] != dict(enumerate(classes)):
        raise ExportCheckError(f"Ultralytics reads the classes {data['names']} from {DATASET_FILE}, expected {classes}")
    num_classes = len(data["names"])

    jobs = []
    failures: list[str] = []
    for split in SPLITS:
        image_dir, label_dir = export_dir / "images" / split, export_dir / "labels" / split
        image_files = sorted(os.listdir(image_dir)) if image_dir.is_dir() else []
        stems = {name.rsplit(".", 1)[0] for name in image_files}
        for orphan in sorted(os.listdir(label_dir)) if label_dir.is_dir() else []:
            if orphan.rsplit(".", 1)[0] not in stems:
                failures.append(f"labels/{split}/{orphan} has no image")
        for name in image_files:
            stem = name.rsplit(".", 1)[0]
            arguments = (f"{image_dir}/{name}", f"{label_dir}/{stem}.txt", "", False, num_classes, 0, 0, False)
            jobs.append((split, name, arguments))
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(data_utils.verify_image_label, [args for _, _, args in jobs]))

    counts = {"images": 0, "labels_found": 0, "background_images": 0, "corrupt": 0, "missing_labels": 0}
    for (split, name, _), result in zip(jobs, results):
        _, _, shape, _, _, missing, found, empty, corrupt, message = result
        counts["images"] += 1
        counts["labels_found"] += found
        counts["background_images"] += empty
        counts["corrupt"] += corrupt
        counts["missing_labels"] += missing
        where = f"images/{split}/{name}"
        # Ultralytics' messages start with the image's full path; name it once, shortly.
        message = (message or "").replace(f"{export_dir}/{where}: ", "").replace("ignoring corrupt image/label: ", "")
        message = message.strip()
        if corrupt:
            failures.append(f"{where} is corrupt: {message}")
        elif missing or not found:
            failures.append(f"{where} has no label file")
        elif "corrupt" in message or "restored" in message:
            failures.append(f"{where} had to be repaired by Ultralytics: {message}")
        elif expected_shapes is not None and name in expected_shapes and tuple(shape) != tuple(expected_shapes[name]):
            failures.append(
                f"{where} loads as {shape[1]}x{shape[0]} (width x height) but its labels were normalised "
                f"for {expected_shapes[name][1]}x{expected_shapes[name][0]} (registry, after EXIF orientation)"
            )
        elif message:
            logger.warning("Ultralytics on %s: %s", where, message)
    if failures:
        raise ExportCheckError(
            f"Ultralytics rejects {len(failures)} file(s) of the export {_export_name(export_dir)}: {failures[0]}"
            + (f"; also {'; '.join(failures[1:3])}" if len(failures) > 1 else "")
            + "; fix those images' boxes or exclude the images, then export again"
        )
    return counts


def _export_name(folder: Path) -> str:
    """``demo_v3`` for the export folder or for the staging folder it is written in."""
    staging = re.fullmatch(r"\.(.+_v\d+)\.[0-9a-f]+\.tmp", folder.name)
    return f"{staging.group(1)} (being written)" if staging else folder.name


def check_coco_export(export_dir: Path) -> dict[str, int]:
    """Load every ``instances_<split>.json`` with pycocotools and find each image file.

    Raises ``ExportCheckError`` naming the file or image that does not hold.
    """
    from pycocotools.coco import COCO

    export_dir = Path(export_dir)
    counts = {"images": 0, "annotations": 0}
    for split in SPLITS:
        annotation_file = export_dir / "annotations" / f"instances_{split}.json"
        try:
            with _quiet():
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


def _quiet():
    import contextlib

    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints timings


# --- health -------------------------------------------------------------------------------

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
                    int((~_member(split_images["image_id"], split_boxes["image_id"].tolist())).sum())
                    if name == ALL_CLASSES
                    else None
                ),
            }
            for column in ("area", "aspect"):
                values = chosen[column].to_numpy()
                quantiles = np.quantile(values, [0.1, 0.5, 0.9]) if len(values) else [np.nan] * 3
                for label, value in zip(("p10", "median", "p90"), quantiles):
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
