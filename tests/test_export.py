"""Export: versioned, deterministic YOLO data sets with splits that never move.

Inputs are built the way the project builds them: images go through ``ingest_images``
into the content-addressed store, and the annotation, label and exclusion registries
are appended with their schemas. Most tests run the pipeline's nodes as plain
functions; one runs the pipeline through a real Kedro session.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cv_pipelines.config.loader import section_parameters
from cv_pipelines.datasets.yolo_export_dataset import YoloExportDataset
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.checks import check_with_ultralytics
from cv_pipelines.exports.coco import check_coco_export
from cv_pipelines.exports.errors import ExportCheckError
from cv_pipelines.exports.health import health_figure, health_report_files, health_table
from cv_pipelines.exports.selection import plan_export, split_of
from cv_pipelines.exports.writing import write_export
from cv_pipelines.images.ingestion import IMAGES_SCHEMA, ingest_images, read_images_registry
from cv_pipelines.pipelines.export.nodes import (
    draw_export_sample,
    export_yolo_dataset,
    report_export_health,
    select_export_images,
    summarize_export,
)
from cv_pipelines.registries import parts as registry_parts
from cv_pipelines.registries.schemas import ANNOTATIONS_SCHEMA, EXCLUSIONS_SCHEMA, LABELS_SCHEMA
from tests.conftest import run_pipeline
from tests.support.images import image_bytes, write
from tests.test_ingestion import settings_for

#: conf/base/parameters_labeling.yml: the declared order of label set "demo".
CLASSES = ["circle", "square", "triangle", "star", "ring"]
RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- building inputs -------------------------------------------------------------------------


def ingest(project: Path, files: dict[str, bytes]) -> dict[str, object]:
    """Ingest ``name -> bytes``; returns ``name -> images registry row`` for every image so far."""
    for name, data in files.items():
        write(project / "data/incoming" / name, data)
    ingest_images(settings_for(project))
    return {row.original_name: row for row in read_images_registry(project / "data/registry").itertuples()}


def label(project: Path, image, boxes=(), *, label_set="demo", source="coco:first", active=True, at=T0) -> None:
    """A labels row for ``image`` and one annotation row per ``(label, x_min, y_min, x_max, y_max)``."""
    registry = project / "data/registry"
    common = {"image_id": image.image_id, "label_set": label_set, "source_task": source, "batch_id": source}
    registry_parts.append_part(
        registry / "labels",
        pd.DataFrame([common | {"annotator": "tests", "active": active, "num_boxes": len(boxes), "labeled_at": at}]),
        schema=LABELS_SCHEMA,
    )
    if boxes:
        rows = [
            common
            | {"label": name, "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1, "occluded": False, "pulled_at": at}
            for name, x0, y0, x1, y1 in boxes
        ]
        registry_parts.append_part(registry / "annotations", pd.DataFrame(rows), schema=ANNOTATIONS_SCHEMA)


def exclude(project: Path, image, label_set: str | None) -> None:
    row = {
        "image_id": image.image_id,
        "label_set": label_set,
        "reason": "blurry",
        "source": "csv:tests",
        "excluded_at": T0,
    }
    registry_parts.append_part(project / "data/registry/exclusions", pd.DataFrame([row]), schema=EXCLUSIONS_SCHEMA)


def registries(project: Path) -> dict[str, pd.DataFrame]:
    registry = project / "data/registry"
    return {
        "images": registry_parts.read_registry(registry / "images", schema=IMAGES_SCHEMA),
        "annotations": registry_parts.read_registry(registry / "annotations", schema=ANNOTATIONS_SCHEMA),
        "labels": registry_parts.read_registry(registry / "labels", schema=LABELS_SCHEMA),
        "exclusions": registry_parts.read_registry(registry / "exclusions", schema=EXCLUSIONS_SCHEMA),
    }


#: The label_sets registry of a project no import added classes to (the catalog's empty registry).
NO_RECORDED_CLASSES = pd.DataFrame()


def export_params(**overrides):
    """The ``export`` parameters as the node gets them: the project's, with ``overrides``."""
    return section_parameters("export", **({"label_set": "demo", "format": "yolo", "split_ratios": RATIOS} | overrides))


def labeling_params(labels: list[str] = CLASSES):
    """The ``labeling`` parameters of label set ``demo`` with ``labels`` in this order."""
    return section_parameters("labeling", label_set="demo", labels=labels)


def run_export_nodes(
    project: Path, *, labels: list[str] = CLASSES, dataset_version=None, exports_dir: str = "data/exports", **overrides
) -> dict:
    """The export pipeline's nodes, called as plain functions, saving to and loading from ``yolo_export``."""
    params = export_params(**overrides)
    selection = select_export_images(*registries(project).values(), NO_RECORDED_CLASSES, params, labeling_params(labels))
    _, _, health_files = report_export_health(selection)
    dataset = YoloExportDataset(path=exports_dir, label_set="demo", format=params.format)
    dataset.save(export_yolo_dataset(selection, health_files, dataset_version))
    return summarize_export(dataset.load())


def small_images(count: int, start: int = 0) -> dict[str, bytes]:
    return {f"img{i:03d}.jpg": image_bytes(1000 + i) for i in range(start, start + count)}


def splits_of(export_dir: Path) -> dict[str, str]:
    return {p.stem: p.parent.name for p in (export_dir / "images").glob("*/*")}


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file but export_info.yaml, with dataset.yaml's machine-specific path line blanked."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "export_info.yaml":
            data = path.read_bytes()
            if path.name == "dataset.yaml":
                data = b"\n".join(line for line in data.splitlines() if not line.startswith(b"path:"))
            found[path.relative_to(folder).as_posix()] = data
    return found


# --- layout, selection ---------------------------------------------------------------------


def test_layout_dataset_yaml_yolo_labels_hard_links_and_lineage(project):
    rows = ingest(
        project,
        {
            "a.jpg": image_bytes(1, size=(64, 48)),
            "b.png": image_bytes(2, size=(50, 40), fmt="PNG"),
            "background.jpg": image_bytes(3),
            "unlabeled.jpg": image_bytes(4),
        },
    )
    label(project, rows["a.jpg"], [("star", 30, 6, 62.5, 30), ("circle", 8, 12, 40, 36)])
    label(project, rows["b.png"], [("square", 0, 0, 25, 40)])
    label(project, rows["background.jpg"])

    summary = run_export_nodes(project)

    root = project / summary["path"]
    assert (root.name, summary["written"], summary["version"]) == ("demo_v1", True, 1)
    assert yaml.safe_load((root / "dataset.yaml").read_text()) == {
        "path": str(root.resolve()),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "names": dict(enumerate(CLASSES)),
    }
    exported = {p.name: p for p in (root / "images").glob("*/*")}
    a, b, bg = rows["a.jpg"], rows["b.png"], rows["background.jpg"]
    assert set(exported) == {f"{a.image_id}.jpg", f"{b.image_id}.png", f"{bg.image_id}.jpg"}
    for row in (a, b, bg):
        image = exported[f"{row.image_id}.{row.format}"]
        assert os.stat(image).st_ino == os.stat(project / row.path).st_ino  # a hard link into the store
    label_of = {p.stem: p for p in (root / "labels").glob("*/*.txt")}
    assert label_of[a.image_id].read_text() == (
        "0 0.375000 0.500000 0.500000 0.500000\n"  # circle: centre (24, 24) of 64x48, 32x24 px
        "3 0.722656 0.375000 0.507812 0.500000\n"  # star
    )
    assert label_of[b.image_id].read_text() == "1 0.250000 0.500000 0.500000 1.000000\n"
    assert label_of[bg.image_id].read_bytes() == b""  # labeled, no boxes: an empty label file
    assert {p.parent.name for p in label_of.values()} <= {"train", "val", "test"}

    info = yaml.safe_load((root / "export_info.yaml").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert info["version"] == 1 and info["label_set"] == "demo" and info["format"] == "yolo"
    assert (info["dataset_version"], info["dataset_commit"], info["code_commit"]) == ("working tree", head, head)
    assert len(info["registries_hash"]) == len(info["content_hash"]) == 64
    assert (info["split_seed"], info["split_ratios"], info["classes"]) == (0, RATIOS, CLASSES)
    assert sum(info["counts"]["images"].values()) == 3
    assert sum(info["counts"]["images_without_boxes"].values()) == 1
    assert sum(sum(per_class.values()) for per_class in info["counts"]["boxes"].values()) == 3
    assert info["check"] == {"images": 3, "labels_found": 3, "background_images": 1, "corrupt": 0, "missing_labels": 0}
    assert (root / "health/health.csv").is_file() and (root / "health/health.png").stat().st_size > 1000
    assert sorted(p.name for p in (project / "data/exports").iterdir()) == [".demo.export.lock", "demo_v1"]


def test_exclusions_retired_labelings_unknown_labels_and_other_label_sets_are_left_out(project):
    names = [
        "keep",
        "excluded_everywhere",
        "excluded_here",
        "excluded_elsewhere",
        "retired",
        "other_set",
        "unknown_label",
        "relabeled",
        "not_labeled",
    ]
    rows = ingest(project, {f"{name}.jpg": image_bytes(i + 10) for i, name in enumerate(names)})
    for name in names[:5]:
        label(project, rows[f"{name}.jpg"], [("circle", 1, 1, 20, 20)])
    exclude(project, rows["excluded_everywhere.jpg"], None)
    exclude(project, rows["excluded_here.jpg"], "demo")
    exclude(project, rows["excluded_elsewhere.jpg"], "other")
    label(project, rows["retired.jpg"], active=False, at=T0 + timedelta(days=1))  # a later row retires it
    label(project, rows["other_set.jpg"], [("circle", 1, 1, 20, 20)], label_set="other")
    label(project, rows["unknown_label.jpg"], [("hexagon", 1, 1, 20, 20), ("ring", 2, 2, 30, 30)])
    label(project, rows["relabeled.jpg"], [("circle", 1, 1, 20, 20)], source="cvat:1")
    label(project, rows["relabeled.jpg"], [("square", 5, 5, 25, 25)], source="cvat:2", at=T0 + timedelta(days=2))

    plan = plan_export(**registries(project), label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)

    by_id = {row.image_id: name for name, row in rows.items()}
    assert sorted(by_id[i] for i in plan.images["image_id"]) == [
        "excluded_elsewhere.jpg",
        "keep.jpg",
        "relabeled.jpg",
        "unknown_label.jpg",
    ]
    assert plan.labels[rows["unknown_label.jpg"].image_id].startswith("4 ")  # only the ring box
    assert plan.labels[rows["relabeled.jpg"].image_id].startswith("1 ")  # only the newest labeling's box
    assert any("'hexagon'" in problem and rows["unknown_label.jpg"].image_id in problem for problem in plan.problems)


def test_boxes_reaching_outside_are_clipped_and_duplicates_and_empty_boxes_dropped(project):
    rows = ingest(project, {"a.jpg": image_bytes(1, size=(40, 20))})
    label(
        project,
        rows["a.jpg"],
        [
            ("circle", -4, 10, 10, 25),  # reaches outside: clipped to (0, 10, 10, 20)
            ("square", 5, 5, 15, 15),
            ("square", 5, 5, 15, 15),  # the same box twice
            ("star", 50, 5, 60, 15),  # wholly outside: no area left
        ],
    )

    plan = plan_export(**registries(project), label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)

    assert plan.labels[rows["a.jpg"].image_id] == (
        "0 0.125000 0.750000 0.250000 0.500000\n1 0.250000 0.500000 0.250000 0.500000\n"
    )
    assert [p.split(" (e.g.")[0] for p in plan.problems if not p.startswith("split")] == [
        "1 box(es) reaching outside their image clipped to it",
        "1 box(es) with no area inside their image left out",
        "1 duplicate box(es) dropped",
    ]


def test_empty_registries_and_a_mismatched_label_set_fail_with_one_sentence(project):
    empty = [pd.DataFrame()] * 5  # what the catalog gives for a registry without parts
    with pytest.raises(ConfigurationError, match="no image of label set 'demo'"):
        select_export_images(*empty, export_params(), labeling_params())
    with pytest.raises(ConfigurationError, match=r"labeling\.label_set is 'demo'"):
        select_export_images(*empty, export_params(label_set="cars"), labeling_params())


# --- splits, classes, versions ---------------------------------------------------------------


def test_split_is_a_pure_function_with_the_right_proportions():
    ids = [f"{i:064x}" for i in range(2000)]
    counts = Counter(split_of(i, 0, RATIOS) for i in ids)
    assert abs(counts["train"] / 2000 - 0.8) < 0.03
    assert abs(counts["val"] / 2000 - 0.1) < 0.025 and abs(counts["test"] / 2000 - 0.1) < 0.025
    assert [split_of(i, 0, RATIOS) for i in ids] == [split_of(i, 0, dict(RATIOS)) for i in ids]
    assert [split_of(i, 1, RATIOS) for i in ids[:200]] != [split_of(i, 0, RATIOS) for i in ids[:200]]
    assert {split_of(i, 0, {"train": 1.0, "val": 0.0, "test": 0.0}) for i in ids} == {"train"}


def test_adding_images_never_moves_one_and_a_changed_content_gets_the_next_version(project):
    rows = ingest(project, small_images(16))
    for row in rows.values():
        label(project, row, [("circle", 2, 2, 20, 20)])
    first = run_export_nodes(project)
    v1 = splits_of(project / first["path"])

    rows = ingest(project, small_images(16, start=16))
    for name, row in rows.items():
        if name >= "img016":
            label(project, row)
    second = run_export_nodes(project)

    assert (second["path"], second["version"], second["written"]) == ("data/exports/demo_v2", 2, True)
    v2 = splits_of(project / second["path"])
    assert len(v1) == 16 and len(v2) == 32
    assert all(v2[image] == split for image, split in v1.items())
    assert splits_of(project / first["path"]) == v1  # v1 is left as it was


def test_class_ids_do_not_shift_when_a_class_is_appended_or_has_no_boxes(project):
    rows = ingest(project, small_images(6))
    for i, row in enumerate(rows.values()):
        label(project, row, [("ring" if i % 2 else "circle", 3, 3, 30, 20)])  # square, triangle, star: no boxes
    first = project / run_export_nodes(project)["path"]
    second = project / run_export_nodes(project, labels=[*CLASSES, "hexagon"])["path"]

    assert (first.name, second.name) == ("demo_v1", "demo_v2")
    assert yaml.safe_load((second / "dataset.yaml").read_text())["names"] == dict(enumerate([*CLASSES, "hexagon"]))
    first_labels = {p.relative_to(first): p.read_text() for p in (first / "labels").glob("*/*.txt")}
    assert {p.relative_to(second): p.read_text() for p in (second / "labels").glob("*/*.txt")} == first_labels
    assert {text[0] for text in first_labels.values()} == {"0", "4"}


def test_same_inputs_give_byte_identical_files_and_no_second_version(project, caplog):
    rows = ingest(project, small_images(10))
    for i, row in enumerate(rows.values()):
        label(project, row, [("circle", 1, 2, 20, 21), ("star", 5.25, 6.5, 40, 30)] if i % 3 else [])
    first = run_export_nodes(project)

    with caplog.at_level(logging.INFO):
        again = run_export_nodes(project)
    assert (again["version"], again["written"], again["content_hash"]) == (1, False, first["content_hash"])
    assert "version 1 (data/exports/demo_v1) already holds this content" in caplog.text
    assert not (project / "data/exports/demo_v2").exists()

    # The same rows in another order, into another folder: the same bytes.
    shuffled = {name: frame.sample(frac=1, random_state=7) for name, frame in registries(project).items()}
    plan = plan_export(**shuffled, label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)
    other = write_export(
        plan,
        project_root=project,
        exports_dir=project / "elsewhere",
        reports=health_report_files(health_table(plan), health_figure(plan)),
    )
    assert other.content_hash == first["content_hash"]
    assert tree_bytes(other.path) == tree_bytes(project / first["path"])


def test_a_crash_while_writing_leaves_no_version_and_is_cleaned_up_next_time(project, monkeypatch):
    import cv_pipelines.exports.writing as writing

    rows = ingest(project, small_images(5))
    for row in rows.values():
        label(project, row)
    plan = plan_export(**registries(project), label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)
    exports = project / "data/exports"
    real_link, calls = writing._link_image, []

    def link_then_fail(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_link(source, target)

    monkeypatch.setattr(writing, "_link_image", link_then_fail)
    with pytest.raises(OSError, match="No space"):
        write_export(plan, project_root=project, exports_dir=exports)
    assert [p.name for p in exports.iterdir()] == [".demo.export.lock"]

    monkeypatch.setattr(writing, "_link_image", real_link)
    (exports / ".demo_v1.0badc0de.tmp/images").mkdir(parents=True)  # what a killed run leaves
    result = write_export(plan, project_root=project, exports_dir=exports)
    assert result.path.name == "demo_v1" and sorted(p.name for p in exports.iterdir()) == [
        ".demo.export.lock",
        "demo_v1",
    ]


def test_images_are_copied_only_across_file_systems(project, monkeypatch):
    import errno

    import cv_pipelines.exports.writing as writing

    rows = ingest(project, small_images(3))
    for row in rows.values():
        label(project, row)

    def cross_device_link(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(writing.os, "link", cross_device_link)
    summary = run_export_nodes(project)
    for row in rows.values():
        exported = next((project / summary["path"] / "images").glob(f"*/{row.image_id}.jpg"))
        stored = project / row.path
        assert os.stat(exported).st_ino != os.stat(stored).st_ino and exported.read_bytes() == stored.read_bytes()


# --- Ultralytics ---------------------------------------------------------------------------


def test_rotated_jpegs_get_labels_in_the_frame_ultralytics_loads(project):
    from ultralytics.data.utils import verify_image_label
    from ultralytics.utils.patches import imread

    # Stored 80 wide and 40 high; EXIF orientation 6 or 8 shows them 40 wide and 80 high.
    rows = ingest(
        project,
        {
            "r6.jpg": image_bytes(1, size=(80, 40), exif_orientation=6),
            "r8.jpg": image_bytes(2, size=(80, 40), exif_orientation=8),
        },
    )
    for row in rows.values():
        assert (row.width, row.height) == (40, 80)
        label(project, row, [("triangle", 10, 50, 30, 75)])  # in the frame the registry describes

    root = project / run_export_nodes(project)["path"]

    for image in (root / "images").glob("*/*.jpg"):
        label_file = root / "labels" / image.parent.name / f"{image.stem}.txt"
        _, boxes, shape, _, _, missing, found, _, corrupt, message = verify_image_label(
            (str(image), str(label_file), "", False, len(CLASSES), 0, 0, False)
        )
        assert (tuple(shape), missing, found, corrupt, message) == ((80, 40), 0, 1, 0, "")
        assert imread(str(image)).shape[:2] == (80, 40)  # the pixels training gets
        assert boxes.shape == (1, 5) and boxes[0].tolist() == pytest.approx([2, 0.5, 0.78125, 0.5, 0.3125], abs=1e-6)
        assert ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all()


def test_a_broken_label_or_image_fails_the_check_naming_it_and_writes_no_version(project):
    rows = ingest(project, small_images(6))
    for row in rows.values():
        label(project, row, [("circle", 2, 2, 20, 20)])
    plan = plan_export(**registries(project), label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)
    exports = project / "data/exports"

    def check(folder):
        return check_with_ultralytics(
            folder, classes=CLASSES, expected_shapes=plan.expected_shapes(), project_root=project
        )

    victim = plan.images["image_id"].iloc[2]
    plan.labels[victim] = "7 0.5 0.5 2.0 0.1\n"  # an unknown class and a box wider than the image
    with pytest.raises(ExportCheckError, match=victim):
        write_export(plan, project_root=project, exports_dir=exports, check=check)
    assert [p.name for p in exports.iterdir()] == [".demo.export.lock"]

    # Labels normalised in the wrong frame (a registry that got an image's size wrong).
    plan = plan_export(**registries(project), label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)
    plan.images.loc[plan.images["image_id"] == victim, ["width", "height"]] = [32, 48]
    with pytest.raises(ExportCheckError, match=f"{victim}.jpg loads as 48x32"):
        write_export(plan, project_root=project, exports_dir=exports, check=check)

    # A truncated image in a written export.
    plan = plan_export(**registries(project), label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)
    root = write_export(plan, project_root=project, exports_dir=exports, check=check).path
    image = next((root / "images").glob(f"*/{victim}.jpg"))
    data = image.read_bytes()
    image.unlink()  # never write through the hard link into the store
    image.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportCheckError, match=f"{victim}.jpg"):
        check_with_ultralytics(root, classes=CLASSES, project_root=project)


# --- COCO, health --------------------------------------------------------------------------


def test_coco_export_loads_with_pycocotools_from_the_same_selection_and_split(project):
    from pycocotools.coco import COCO

    rows = ingest(project, small_images(12))
    boxes = {}
    for i, row in enumerate(rows.values()):
        boxes[row.image_id] = [("square", 1.5, 2, 20, 30.25), ("ring", 4, 4, 47, 31)][: i % 3]
        label(project, row, boxes[row.image_id])
    yolo = splits_of(project / run_export_nodes(project)["path"])
    summary = run_export_nodes(project, format="coco", exports_dir="data/exports_coco")

    root = project / summary["path"]
    assert not (root / "dataset.yaml").exists() and not (root / "labels").exists()
    assert summary["check"] == {"images": 12, "annotations": sum(len(b) for b in boxes.values())}
    seen = {}
    for split in ("train", "val", "test"):
        coco = COCO(str(root / f"annotations/instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES
        for image in coco.loadImgs(coco.getImgIds()):
            image_id = Path(image["file_name"]).stem
            seen[image_id] = split
            assert os.stat(root / "images" / split / image["file_name"]).st_nlink >= 2
            got = sorted(
                (CLASSES[a["category_id"] - 1], *a["bbox"]) for a in coco.loadAnns(coco.getAnnIds([image["id"]]))
            )
            assert got == sorted((n, x0, y0, x1 - x0, y1 - y0) for n, x0, y0, x1, y1 in boxes[image_id])
    assert seen == yolo
    assert check_coco_export(root)["images"] == 12


def test_health_report_counts_and_tiny_and_huge_boxes(project):
    rows = ingest(project, {f"h{i}.jpg": image_bytes(500 + i, size=(100, 100)) for i in range(8)})
    rows = list(rows.values())
    label(project, rows[0], [("circle", 10, 10, 12, 12), ("circle", 0, 0, 100, 96), ("star", 10, 10, 60, 35)])
    label(project, rows[1], [("star", 10, 10, 60, 35)])
    for row in rows[2:5]:
        label(project, row)
    plan = plan_export(**registries(project), label_set="demo", classes=CLASSES, split_seed=0, split_ratios=RATIOS)

    table = health_table(plan).set_index(["split", "class"])

    everything = table.loc[("all", "(all classes)")]
    assert (everything["images"], everything["boxes"], everything["images_without_boxes"]) == (5, 4, 3)
    assert (everything["tiny_boxes"], everything["huge_boxes"]) == (1, 1)  # 0.04% and 96% of the image
    assert table.loc[("all", "star"), ["images", "boxes"]].tolist() == [2, 2]
    assert table.loc[("all", "star"), "aspect_median"] == pytest.approx(2.0)  # 50 x 25 pixels
    assert table.loc[("all", "square"), "boxes"] == 0
    per_split = table.xs("(all classes)", level="class").drop(index="all")
    assert per_split["images"].sum() == 5 and per_split["boxes"].sum() == 4


# --- through Kedro -------------------------------------------------------------------------


def test_export_pipeline_runs_in_a_kedro_session(project):
    rows = ingest(project, small_images(8))
    for i, row in enumerate(rows.values()):
        label(project, row, [("circle", 2, 2, 20, 20)] if i % 2 else [])

    run_pipeline(project, "export")

    reporting = project / "data/reporting/export"
    summary = yaml.safe_load((reporting / "last_export.yml").read_text())
    assert (summary["path"], summary["written"]) == ("data/exports/demo_v1", True)
    health = pd.read_csv(reporting / "health.csv")
    everything = health[(health["split"] == "all") & (health["class"] == "(all classes)")].iloc[0]
    assert (everything["images"], everything["boxes"], everything["images_without_boxes"]) == (8, 4, 4)
    assert (reporting / "health.png").stat().st_size > 1000
    assert (project / summary["path"] / "health/health.csv").read_bytes() == (reporting / "health.csv").read_bytes()
    assert (reporting / "sample_images.png").stat().st_size > 1000  # drawn from yolo_export

    run_pipeline(project, "export")
    again = yaml.safe_load((reporting / "last_export.yml").read_text())
    assert (again["path"], again["written"]) == ("data/exports/demo_v1", False)


def test_export_at_an_old_dataset_version_reproduces_it(project):
    """Issue #5: snapshot v1, add labeled images, snapshot v2; an export at v1 equals v1."""
    rows = ingest(project, small_images(6))
    for row in rows.values():
        label(project, row, [("ring", 1, 1, 30, 20)])
    run_pipeline(project, "snapshot")
    at_v1_time = run_export_nodes(project)
    rows = ingest(project, small_images(4, start=6))
    for name in ("img006.jpg", "img007.jpg", "img008.jpg", "img009.jpg"):
        label(project, rows[name])
    run_pipeline(project, "snapshot")
    head = (project / ".git/HEAD").read_text()

    # Through Kedro: the catalog's registry datasets read the registries as of the version;
    # an environment's catalog entry sends yolo_export into another folder.
    (project / "conf/replay").mkdir()
    (project / "conf/replay/catalog_export.yml").write_text(
        yaml.safe_dump(
            {
                "yolo_export": {
                    "type": "cv_pipelines.datasets.yolo_export_dataset.YoloExportDataset",
                    "path": "data/exports_replay",
                    "label_set": "demo",
                }
            }
        )
    )
    run_pipeline(project, "export", env="replay", params={"dataset_version": "data/demo/v1"})
    replay = yaml.safe_load((project / "data/reporting/export/last_export.yml").read_text())
    assert (replay["path"], replay["written"]) == ("data/exports_replay/demo_v1", True)
    assert replay["content_hash"] == at_v1_time["content_hash"]
    assert replay["registries_hash"] == at_v1_time["registries_hash"]
    assert replay["dataset_version"] == "data/demo/v1" and replay["dataset_commit"]
    assert tree_bytes(project / replay["path"]) == tree_bytes(project / at_v1_time["path"])
    assert (project / ".git/HEAD").read_text() == head


# --- the catalog's yolo_export dataset -------------------------------------------------------


def build_for(project: Path, labels: list[str] = CLASSES):
    """The export node's ExportBuild for the project's registries as they are now."""
    selection = select_export_images(
        *registries(project).values(), NO_RECORDED_CLASSES, export_params(), labeling_params(labels)
    )
    return export_yolo_dataset(selection, report_export_health(selection)[2], None)


def test_yolo_export_loads_what_it_saved_else_the_pinned_or_latest_version(project):
    from kedro.io.core import DatasetError

    from cv_pipelines.exports.versions import ExportRef

    with pytest.raises(ConfigurationError, match=r"no export of label set 'demo'.*kedro run --pipelines export"):
        YoloExportDataset(path="data/exports", label_set="demo").load()
    rows = ingest(project, small_images(6))
    for row in rows.values():
        label(project, row, [("circle", 2, 2, 20, 20)])
    first = YoloExportDataset(path="data/exports", label_set="demo")
    first.save(build_for(project))
    v1 = first.load()
    assert isinstance(v1, ExportRef) and (v1.name, v1.version, v1.written) == ("demo_v1", 1, True)
    assert (
        v1.path == project / "data/exports/demo_v1" and v1.lineage()["export_content_hash"] == v1.info["content_hash"]
    )

    # Another export of other content (another process, say) writes v2.
    write_export(
        build_for(project, labels=[*CLASSES, "hexagon"]).plan,
        project_root=project,
        exports_dir=project / "data/exports",
    )
    again = YoloExportDataset(path="data/exports", label_set="demo")
    assert again.load().version == 2  # nothing saved by this one: the latest
    assert first.load() == v1  # what this one saved, not the newer v2
    pinned = YoloExportDataset(path="data/exports", label_set="demo", export_version="1")  # --params may give text
    assert pinned.load() == v1 and pinned.exists()
    with pytest.raises(ConfigurationError, match=r"demo_v7 does not exist .*complete versions: 1, 2\)"):
        YoloExportDataset(path="data/exports", label_set="demo", export_version=7).load()
    with pytest.raises(ConfigurationError, match="'yolo' format, not 'coco'"):
        YoloExportDataset(path="data/exports", label_set="demo", format="coco").load()
    with pytest.raises(ConfigurationError, match="yolo_export holds 'cars'"):
        YoloExportDataset(path="data/exports", label_set="cars").save(build_for(project))
    with pytest.raises(DatasetError, match="needs a local folder"):
        YoloExportDataset(path="s3://bucket/exports", label_set="demo")

    # Kedro wraps what a dataset raises in a DatasetError with a traceback, unless it is one.
    with pytest.raises(DatasetError, match="demo_v7 does not exist"):
        YoloExportDataset(path="data/exports", label_set="demo", export_version=7).load()
    preview = yaml.safe_load(pinned.preview())
    assert (preview["export"], preview["export_version"], preview["counts"]) == ("demo_v1", "1", v1.info["counts"])
    assert YoloExportDataset(path="nowhere", label_set="demo").preview()  # no export yet: a hint, not an error


def test_yolo_export_finds_the_version_holding_the_same_content_and_writes_nothing(project):
    rows = ingest(project, small_images(6))
    for row in rows.values():
        label(project, row, [("star", 2, 2, 20, 20)])
    YoloExportDataset(path="data/exports", label_set="demo").save(build_for(project))
    dataset = YoloExportDataset(path="data/exports", label_set="demo")
    dataset.save(build_for(project))

    found = dataset.load()
    assert (found.name, found.written) == ("demo_v1", False)
    assert sorted(p.name for p in (project / "data/exports").iterdir()) == [".demo.export.lock", "demo_v1"]
    summary = summarize_export(found)
    assert (summary["path"], summary["written"], summary["version"]) == ("data/exports/demo_v1", False, 1)


def test_the_sample_is_drawn_from_the_exports_own_files_in_both_formats(project):
    rows = ingest(project, small_images(10))
    for i, row in enumerate(rows.values()):
        label(project, row, [("ring", 2, 2, 20, 20)] * (i % 2) + [("star", 22, 22, 40, 40)] * (i % 3 == 0))
    for fmt in ("yolo", "coco"):
        dataset = YoloExportDataset(path=f"data/exports_{fmt}", label_set="demo", format=fmt)
        dataset.save(build_for(project))
        figure = draw_export_sample(dataset.load())
        titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
        assert len(titles) == 8 and figure.texts[0].get_text() == "demo_v1: 8 of 10 images"
        boxes = [int(title.split(" · ")[2].split()[0]) for title in titles]
        assert boxes[:5] == [b for b in boxes[:5] if b > 0] and sum(boxes) >= 5  # images with boxes first


def test_the_export_folder_is_the_catalogs_not_a_parameter():
    with pytest.raises(ValueError, match="output_dir"):
        export_params(output_dir="data/exports")


def test_export_summary_is_a_report_and_yolo_export_the_edge_to_training(project):
    from kedro.framework.project import find_pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    pipelines = find_pipelines(raise_errors=True)
    export = pipelines["export"]
    assert "yolo_export" in export.all_outputs() and "export_summary" in export.all_outputs()
    readers = {node.name for node in export.nodes if "yolo_export" in node.inputs}
    assert readers == {"summarize_export", "draw_export_sample"}
    assert not any("export_summary" in pipeline.inputs() for pipeline in pipelines.values())
