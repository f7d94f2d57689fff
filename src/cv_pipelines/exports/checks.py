"""Checks an export passes before it is renamed into place: Ultralytics' own, for YOLO.

``check_export`` runs the check of the export's format on a (staging) folder: for YOLO,
Ultralytics' ``check_det_dataset`` and its label loader over every image, the way
training will read them; for COCO, pycocotools (``cv_pipelines.exports.coco``).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cv_pipelines.exports.coco import check_coco_export
from cv_pipelines.exports.errors import ExportCheckError
from cv_pipelines.exports.selection import SPLITS, ExportPlan
from cv_pipelines.exports.versions import DATASET_FILE

logger = logging.getLogger(__name__)

#: One image for Ultralytics' ``verify_image_label``: (split, file name, its arguments).
_Job = tuple[str, str, tuple[Any, ...]]


def check_export(folder: Path, plan: ExportPlan, *, fmt: str, project_root: Path | None = None) -> dict[str, int]:
    """The check of ``fmt`` on the export of ``plan`` in ``folder``; raises ``ExportCheckError``, returns counts."""
    if fmt == "coco":
        return check_coco_export(folder)
    from cv_pipelines.config.console import step_progress

    # A row of the live display while it runs (seconds on a large export); the export's
    # summary says what it found.
    with step_progress(f"checking {len(plan.images)} images with Ultralytics' loader", total=None):
        return check_with_ultralytics(
            folder, classes=plan.classes, expected_shapes=plan.expected_shapes(), project_root=project_root
        )


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

    from cv_pipelines.config.offline import ultralytics_settings_offline

    export_dir = Path(export_dir)
    ultralytics_settings_offline(project_root)
    from ultralytics.data import utils as data_utils  # heavy import kept local

    num_classes = _check_dataset_yaml(export_dir, classes)
    jobs, failures = _label_jobs(export_dir, num_classes)
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(data_utils.verify_image_label, [args for _, _, args in jobs]))
    counts = _tally(jobs, results, export_dir, expected_shapes, failures)
    if failures:
        raise ExportCheckError(
            f"Ultralytics rejects {len(failures)} file(s) of the export {_export_name(export_dir)}: {failures[0]}"
            + (f"; also {'; '.join(failures[1:3])}" if len(failures) > 1 else "")
            + "; fix those images' boxes or exclude the images, then export again"
        )
    return counts


def _check_dataset_yaml(export_dir: Path, classes: list[str] | None) -> int:
    """Ultralytics' ``check_det_dataset`` on the export's ``dataset.yaml``; the number of classes."""
    from ultralytics.data import utils as data_utils  # heavy import kept local

    from cv_pipelines.config.offline import no_font_download

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
    return len(data["names"])


def _label_jobs(export_dir: Path, num_classes: int) -> tuple[list[_Job], list[str]]:
    """One ``verify_image_label`` job per image, and a failure per label file without an image."""
    jobs: list[_Job] = []
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
    return jobs, failures


def _tally(
    jobs: list[_Job],
    results: list[Any],
    export_dir: Path,
    expected_shapes: Mapping[str, tuple[int, int]] | None,
    failures: list[str],
) -> dict[str, int]:
    """Count Ultralytics' verdicts per image and append a sentence per rejected one to ``failures``."""
    counts = {"images": 0, "labels_found": 0, "background_images": 0, "corrupt": 0, "missing_labels": 0}
    for (split, name, _), result in zip(jobs, results, strict=True):
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
    return counts


def _export_name(folder: Path) -> str:
    """``demo_v3`` for the export folder or for the staging folder it is written in."""
    staging = re.fullmatch(r"\.(.+_v\d+)\.[0-9a-f]+\.tmp", folder.name)
    return f"{staging.group(1)} (being written)" if staging else folder.name
