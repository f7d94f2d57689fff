"""Nodes of the ``export`` pipeline: select, report health, write the versioned export.

The registries come in as DataFrames (catalog entries ``*_registry``, read as of
``dataset_version`` when one is given), so where they are loaded from never matters here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cv_pipelines.config.resolvers import in_project, project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.checks import check_with_ultralytics
from cv_pipelines.exports.coco import check_coco_export
from cv_pipelines.exports.errors import ExportCheckError, ExportLockedError, ExportSelectionError
from cv_pipelines.exports.health import (
    ALL_CLASSES,
    HUGE_BOX_AREA,
    TINY_BOX_AREA,
    health_figure,
    health_report_files,
    health_table,
)
from cv_pipelines.exports.selection import ExportPlan, plan_export
from cv_pipelines.exports.writing import write_export

logger = logging.getLogger(__name__)

#: How many images the sample picture shows: enough to see the boxes fit, cheap to draw.
SAMPLE_IMAGES = 8


def select_export_images(
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    labels: pd.DataFrame,
    exclusions: pd.DataFrame,
    export: dict[str, Any],
    labeling: dict[str, Any],
) -> ExportPlan:
    """The export's images, splits and YOLO labels (nothing written yet).

    Class ids come from ``labeling.labels``, the declared order of the label set, so
    ``export.label_set`` must be ``labeling.label_set``.
    """
    if export["label_set"] != labeling["label_set"]:
        raise ConfigurationError(
            f"export.label_set is {export['label_set']!r} but labeling.label_set is {labeling['label_set']!r}; the "
            "class ids of an export come from labeling.labels, so set both to the label set you want to export."
        )
    try:
        plan = plan_export(
            images=images,
            annotations=annotations,
            labels=labels,
            exclusions=exclusions,
            label_set=export["label_set"],
            classes=list(labeling["labels"]),
            split_seed=int(export["split_seed"]),
            split_ratios=dict(export["split_ratios"]),
        )
    except ExportSelectionError as exc:
        raise ConfigurationError(str(exc)) from None
    for problem in plan.problems:
        logger.warning("Export of %s: %s", plan.label_set, problem)
    counts = plan.counts()["images"]
    logger.info(
        "Export of %s selects %d images (train %d, val %d, test %d) with %d boxes",
        plan.label_set,
        len(plan.images),
        counts["train"],
        counts["val"],
        counts["test"],
        len(plan.boxes),
    )
    return plan


def report_export_health(selection: ExportPlan) -> tuple[pd.DataFrame, Any, dict[str, bytes]]:
    """The health table and plot of the selection, and the same two as files for the export."""
    table = health_table(selection)
    figure = health_figure(selection)
    overall = table[table["split"].eq("all") & table["class"].eq(ALL_CLASSES)].iloc[0]
    if overall["tiny_boxes"] or overall["huge_boxes"]:
        logger.warning(
            "Export of %s: %d tiny (< %.1f%% of the image) and %d huge (> %.0f%%) box(es); see the health report",
            selection.label_set,
            overall["tiny_boxes"],
            TINY_BOX_AREA * 100,
            overall["huge_boxes"],
            HUGE_BOX_AREA * 100,
        )
    return table, figure, health_report_files(table, figure)


def export_yolo_dataset(
    selection: ExportPlan,
    health_files: dict[str, bytes],
    export: dict[str, Any],
    dataset_version: str | None,
) -> dict[str, Any]:
    """Write the next export version, checked, or name the version that already holds it.

    The Ultralytics check (``export.format: yolo``; pycocotools for ``coco``) runs on the
    staging folder before it is renamed into place: a separate node after this one
    could only run once the version already exists under its name. Returns the
    version's ``export_info`` plus its ``path`` and whether this run ``written`` it.
    """
    from cv_pipelines.versioning.dataset_versions import (
        current_commit,
        ensure_images_present,
        resolve_version,
    )

    root = project_root()
    exports_dir = in_project(root, export["output_dir"])
    fmt = export["format"]
    fetched = ensure_images_present(root, selection.images["path"].tolist(), dataset_version)
    version = resolve_version(root, dataset_version, selection.inputs)
    lineage = {
        "dataset_version": version.dataset_version or "working tree",
        "dataset_commit": version.commit,  # the version's commit; HEAD for the working tree
        "code_commit": current_commit(root, "HEAD"),  # the code that made this export
        "registries_hash": version.registries_hash,  # the registry rows it was made from
    }

    def check(folder: Path) -> dict[str, int]:
        if fmt == "coco":
            return check_coco_export(folder)
        logger.info("Checking %d images with Ultralytics' data set check and label loader ...", len(selection.images))
        return check_with_ultralytics(
            folder, classes=selection.classes, expected_shapes=selection.expected_shapes(), project_root=root
        )

    try:
        result = write_export(
            selection,
            project_root=root,
            exports_dir=exports_dir,
            fmt=fmt,
            lineage=lineage,
            check=check,
            reports=health_files,
        )
    except (ExportCheckError, ExportSelectionError, ExportLockedError) as exc:
        raise ConfigurationError(f"{exc} (nothing was written)") from None
    name = project_relative(result.path, root)
    if result.written:
        counts = result.info["counts"]["images"]
        logger.info(
            "Export %s written: %d images (train %d, val %d, test %d), content %s%s",
            name,
            sum(counts.values()),
            counts["train"],
            counts["val"],
            counts["test"],
            result.content_hash[:12],
            f"; fetched {fetched} missing image(s) from DVC" if fetched else "",
        )
    else:
        logger.info(
            "Export: nothing written, version %d (%s) already holds this content (%s)",
            result.version,
            name,
            result.content_hash[:12],
        )
    return dict(result.info) | {"path": name, "written": result.written}


def draw_export_sample(selection: ExportPlan, export_summary: dict[str, Any]) -> Any:
    """A matplotlib Figure of a few exported images with their boxes, for kedro-viz and humans.

    The sample is the first images in image-id order (a content hash, so an arbitrary
    but stable pick that does not move between runs of the same export), preferring
    images that have boxes. It takes ``export_summary`` only to run after the export
    node, which has fetched any image a dataset version needs from DVC by then. Boxes
    are the exported ones (clipped, duplicates dropped), drawn in pixel coordinates of
    the image as stored, after EXIF orientation, the frame the registry measures.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg renders the PNG
    from matplotlib.patches import Rectangle
    from PIL import Image, ImageOps

    root = project_root()
    images, boxes = selection.images, selection.boxes
    boxed = set(boxes["image_id"].tolist())
    with_boxes = np.fromiter((i in boxed for i in images["image_id"].tolist()), dtype=bool, count=len(images))
    sample = pd.concat([images[with_boxes], images[~with_boxes]]).head(SAMPLE_IMAGES)
    # Group only the sample's boxes: an export of many thousand images has as many groups.
    sampled = set(sample["image_id"].tolist())
    shown = boxes[np.fromiter((i in sampled for i in boxes["image_id"].tolist()), dtype=bool, count=len(boxes))]
    by_image = {image_id: group for image_id, group in shown.groupby("image_id")}
    columns = 4
    rows = max(1, -(-len(sample) // columns))
    figure = Figure(figsize=(3 * columns, 3.2 * rows), dpi=80)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colours = {name: f"C{i % 10}" for i, name in enumerate(selection.classes)}
    for axis, image in zip(axes, sample.itertuples(index=False), strict=False):
        with Image.open(in_project(root, image.path)) as opened:
            axis.imshow(ImageOps.exif_transpose(opened).convert("RGB"))
        own = by_image.get(image.image_id, boxes.iloc[:0])
        for box in own.itertuples(index=False):
            colour = colours.get(box.label, "white")
            axis.add_patch(
                Rectangle(
                    (box.x_min, box.y_min),
                    box.x_max - box.x_min,
                    box.y_max - box.y_min,
                    fill=False,
                    edgecolor=colour,
                    linewidth=1.5,
                )
            )
            axis.text(
                box.x_min,
                box.y_min,
                box.label,
                color="white",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1},
            )
        axis.set_title(f"{image.split} · {image.image_id[:10]} · {len(own)} box(es)", fontsize=8)
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle(f"{export_summary.get('path', selection.label_set)}: {len(sample)} of {len(images)} images")
    figure.tight_layout()
    return figure
