"""Nodes of the ``export`` pipeline: select, report health, build the export, summarise it.

The registries come in as DataFrames (catalog entries ``*_registry``, read as of
``dataset_version`` when one is given), so where they are loaded from never matters
here; the export itself is written by the catalog's ``yolo_export`` dataset
(``cv_pipelines.datasets.yolo_export_dataset``) from the ``ExportBuild`` these nodes
hand it, and read back from it.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from cv_pipelines.annotations.label_sets import label_set_classes
from cv_pipelines.config.parameters import ExportParams, LabelingParams
from cv_pipelines.config.resolvers import project_relative, project_root
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.errors import ExportSelectionError
from cv_pipelines.exports.health import (
    ALL_CLASSES,
    HUGE_BOX_AREA,
    TINY_BOX_AREA,
    health_figure,
    health_report_files,
    health_table,
    sample_figure,
)
from cv_pipelines.exports.selection import ExportPlan, plan_export
from cv_pipelines.exports.versions import ExportRef
from cv_pipelines.exports.writing import ExportBuild

logger = logging.getLogger(__name__)


def select_export_images(
    images: pd.DataFrame,
    annotations: pd.DataFrame,
    labels: pd.DataFrame,
    exclusions: pd.DataFrame,
    label_sets: pd.DataFrame,
    export: ExportParams,
    labeling: LabelingParams,
) -> ExportPlan:
    """The export's images, splits and YOLO labels (nothing written yet).

    Class ids are the label set's classes in order (``annotations.label_sets``):
    ``labeling.labels`` for ``labeling.label_set``, extended by what COCO imports
    appended, or the classes a COCO import recorded for another set, all read as of
    ``dataset_version`` like the other registries.
    """
    classes = label_set_classes(
        export.label_set,
        label_sets,
        labeling_set=labeling.label_set,
        labeling_labels=labeling.labels,
        parameter="export.label_set",
    )
    try:
        plan = plan_export(
            images=images,
            annotations=annotations,
            labels=labels,
            exclusions=exclusions,
            label_set=export.label_set,
            classes=classes,
            split_seed=export.split_seed,
            split_ratios={split: ratio for split, ratio in export.split_ratios.items()},
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
    selection: ExportPlan, health_files: dict[str, bytes], dataset_version: str | None
) -> ExportBuild:
    """The ``ExportBuild`` the ``yolo_export`` dataset writes: selection, health files and lineage.

    The lineage names the dataset version (or "working tree") and its commit, the code
    commit that made the export, and a hash of the registry rows it was made from.
    """
    from cv_pipelines.versioning.dataset_versions import current_commit, resolve_version

    root = project_root()
    version = resolve_version(root, dataset_version, selection.inputs)
    lineage = {
        "dataset_version": version.dataset_version or "working tree",
        "dataset_commit": version.commit,  # the version's commit; HEAD for the working tree
        "code_commit": current_commit(root, "HEAD"),  # the code that made this export
        "registries_hash": version.registries_hash,  # the registry rows it was made from
    }
    return ExportBuild(plan=selection, health_files=health_files, lineage=lineage, source_rev=dataset_version)


def summarize_export(export: ExportRef) -> dict[str, Any]:
    """The ``export_info`` of the version ``yolo_export`` gives, plus its ``path`` and whether this run ``written`` it."""
    name = project_relative(export.path, project_root())
    if export.written:
        counts = export.info["counts"]["images"]
        logger.info(
            "Export %s written: %d images (train %d, val %d, test %d), content %s",
            name,
            sum(counts.values()),
            counts["train"],
            counts["val"],
            counts["test"],
            str(export.info.get("content_hash", ""))[:12],
        )
    else:
        logger.info(
            "Export: nothing written, version %d (%s) already holds this content (%s)",
            export.version,
            name,
            str(export.info.get("content_hash", ""))[:12],
        )
    return dict(export.info) | {"path": name, "written": export.written}


def draw_export_sample(export: ExportRef) -> Any:
    """A matplotlib Figure of a few images of the export with their boxes, for kedro-viz and humans.

    Drawn from the export's own files (see ``cv_pipelines.exports.health.sample_figure``):
    the first images in image-id order, preferring images with boxes.
    """
    return sample_figure(export)
