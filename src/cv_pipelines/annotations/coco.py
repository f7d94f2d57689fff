"""Read COCO instances files (CVAT's "COCO 1.0" export, or any labeled data set) into
annotation rows of a label set.

The COCO file is parsed by pycocotools, the reference implementation. Boxes are
clipped to the image; boxes that are degenerate after clipping and labels outside the
label set are reported and left out, never fatal.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: A box narrower or lower than this many pixels after clipping is not a box.
MIN_BOX_SIDE_PX = 1.0


@dataclass
class CocoImportProblems:
    """What was left out of a COCO file, one sentence per record."""

    unknown_frames: list[str] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)
    degenerate_boxes: list[str] = field(default_factory=list)
    clipped_boxes: int = 0

    def sentences(self) -> list[str]:
        """Every problem as the sentence that names the record and what is wrong with it."""
        return [*self.unknown_frames, *self.unknown_labels, *self.degenerate_boxes]


@dataclass(frozen=True)
class CocoFrame:
    """One image of a COCO file with its boxes (label, x_min, y_min, x_max, y_max, occluded)."""

    file_name: str
    width: int
    height: int
    boxes: tuple[tuple[str, float, float, float, float, bool], ...]


def load_coco_frames(coco_file: Path) -> list[CocoFrame]:
    """Every image of ``coco_file`` with its boxes, in file order, through pycocotools."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(coco_file))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as exc:
        raise ValueError(
            f"{coco_file} is not a COCO instances file ({type(exc).__name__}: {exc}); "
            "export it again as COCO 1.0 / instances JSON"
        ) from None
    categories = {cat["id"]: cat["name"] for cat in coco.loadCats(coco.getCatIds())}
    frames = []
    for image in coco.loadImgs(sorted(coco.getImgIds())):
        boxes = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]], iscrowd=None)):
            x, y, w, h = (float(v) for v in ann["bbox"])
            label = categories.get(ann["category_id"], f"<category {ann['category_id']}>")
            occluded = bool((ann.get("attributes") or {}).get("occluded", False))
            boxes.append((label, x, y, x + w, y + h, occluded))
        frames.append(
            CocoFrame(
                file_name=str(image["file_name"]),
                width=int(image.get("width") or 0),
                height=int(image.get("height") or 0),
                boxes=tuple(boxes),
            )
        )
    return frames


def frames_to_rows(
    frames: Sequence[CocoFrame],
    *,
    image_for_frame: Callable[[str], tuple[str, int, int] | None],
    labels: Sequence[str],
    source: str,
) -> tuple[list[dict], list[dict], CocoImportProblems]:
    """Annotation rows and labeled-image rows for ``frames``.

    ``image_for_frame(file_name)`` returns ``(image_id, width, height)`` of the stored
    image (size after EXIF orientation), or None when the frame is not one of ours.
    Every known frame becomes a labeled image, with no boxes if it has none: background
    images are data too.
    """
    allowed = set(labels)
    problems = CocoImportProblems()
    annotations: list[dict] = []
    labeled: list[dict] = []
    for frame in frames:
        found = image_for_frame(frame.file_name)
        if found is None:
            problems.unknown_frames.append(
                f"{source}: frame {frame.file_name!r} matches no stored image; it was left out "
                "(was it renamed after upload?)"
            )
            continue
        image_id, width, height = found
        kept = 0
        for label, x1, y1, x2, y2, occluded in frame.boxes:
            if label not in allowed:
                problems.unknown_labels.append(
                    f"{source}: frame {frame.file_name!r} has a box labeled {label!r}, which is not in "
                    f"the label set ({', '.join(labels)}); add the label to labeling.labels or fix it in CVAT"
                )
                continue
            cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
            if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
                problems.clipped_boxes += 1
            if cx2 - cx1 < MIN_BOX_SIDE_PX or cy2 - cy1 < MIN_BOX_SIDE_PX:
                problems.degenerate_boxes.append(
                    f"{source}: frame {frame.file_name!r} has a degenerate {label!r} box "
                    f"[{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}] (less than {MIN_BOX_SIDE_PX:g} px "
                    "inside the image); it was left out"
                )
                continue
            annotations.append(
                {
                    "image_id": image_id,
                    "label": label,
                    "x_min": cx1,
                    "y_min": cy1,
                    "x_max": cx2,
                    "y_max": cy2,
                    "occluded": occluded,
                }
            )
            kept += 1
        labeled.append({"image_id": image_id, "num_boxes": kept})
    return annotations, labeled, problems


def image_lookup_by_stem(images: Mapping[str, tuple[int, int]]) -> Callable[[str], tuple[str, int, int] | None]:
    """Frame names of tasks this project created are ``<image_id>.<ext>`` (or a path to it)."""

    def lookup(file_name: str) -> tuple[str, int, int] | None:
        stem = Path(file_name).name.rsplit(".", 1)[0]
        size = images.get(stem)
        return (stem, *size) if size else None

    return lookup
