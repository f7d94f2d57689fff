"""COCO import: images through ingestion, boxes into the annotations registry, idempotent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cv_pipelines.images.ingestion import read_images_registry
from cv_pipelines.registries import parts as registry_parts
from tests.conftest import run_pipeline
from tests.support.cli import kedro_cli
from tests.support.images import image_bytes, write

LABELS = ["circle", "square", "triangle", "star", "ring"]


def coco_folder(root: Path) -> tuple[Path, dict[str, bytes]]:
    folder = root / "labeled_set"
    images = {
        "a.jpg": image_bytes(1, size=(100, 80)),
        "sub/b.png": image_bytes(2, size=(60, 40), fmt="PNG"),
        "empty_scene.jpg": image_bytes(3, size=(50, 50)),
        "broken.jpg": b"not an image",
    }
    for name, data in images.items():
        write(folder / "images" / name, data)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 2, "file_name": "sub/b.png", "width": 60, "height": 40},
            {"id": 3, "file_name": "empty_scene.jpg", "width": 50, "height": 50},
            {"id": 4, "file_name": "broken.jpg", "width": 10, "height": 10},
            {"id": 5, "file_name": "missing.jpg", "width": 10, "height": 10},
        ],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "unicorn"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "area": 600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [90, 70, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [70, 10, 5, 5], "area": 25, "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0,
             "attributes": {"occluded": True, "rotation": 0.0}},
        ],
    }
    write(folder / "annotations/instances_default.json", json.dumps(coco).encode())
    return folder, images


def test_import_registers_images_boxes_and_backgrounds(project):
    folder, images = coco_folder(project.parent)
    run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder)}})

    ids = {name: hashlib.sha256(data).hexdigest() for name, data in images.items()}
    registry = read_images_registry(project / "data/registry")
    assert sorted(registry["image_id"]) == sorted(ids[n] for n in ("a.jpg", "sub/b.png", "empty_scene.jpg"))
    assert set(registry["source_id"]) == {"coco:labeled_set"}
    assert all((folder / "images" / n).exists() for n in images)  # the user's folder is kept

    boxes = registry_parts.read_registry(project / "data/registry/annotations")
    by_image = boxes.groupby("image_id")
    a = by_image.get_group(ids["a.jpg"]).set_index("label")
    assert a.loc["circle", ["x_min", "y_min", "x_max", "y_max"]].tolist() == [10, 10, 30, 40]
    assert a.loc["square", ["x_min", "y_min", "x_max", "y_max"]].tolist() == [90, 70, 100, 80]  # clipped
    assert "unicorn" not in set(boxes["label"])
    b = by_image.get_group(ids["sub/b.png"])
    assert b["label"].tolist() == ["circle"] and bool(b["occluded"].iloc[0])  # the box at x=70 > 60 is degenerate
    assert set(boxes["label_set"]) == {"demo"} and set(boxes["source_task"]) == {"coco:labeled_set"}

    labels = registry_parts.read_registry(project / "data/registry/labels").set_index("image_id")
    assert labels.loc[ids["empty_scene.jpg"], "num_boxes"] == 0  # a background image is labeled
    assert labels["active"].all() and len(labels) == 3

    summary = (project / "data/reporting/import_coco/last_import.yml").read_text()
    assert "unicorn" in summary and "missing.jpg" in summary and "degenerate" in summary


def test_reimport_replaces_rows_instead_of_duplicating(project):
    folder, _ = coco_folder(project.parent)
    params = {"import_coco": {"source": str(folder)}}
    run_pipeline(project, "import_coco", params=params)
    first = registry_parts.read_registry(project / "data/registry/annotations")
    run_pipeline(project, "import_coco", params=params)
    again = registry_parts.read_registry(project / "data/registry/annotations")
    assert len(again) == len(first) == 3
    assert len(registry_parts.read_registry(project / "data/registry/labels")) == 3
    assert len(read_images_registry(project / "data/registry")) == 3


def test_import_without_a_source_says_how_to_give_one(project):
    result = kedro_cli(project, "run", "--pipelines", "import_coco", env=None)
    assert result.exit_code == 2, result.output
    assert "--params import_coco.source=<folder>" in result.stderr
    assert isinstance(result.exception, SystemExit)  # one sentence, not a traceback


def test_a_broken_coco_file_stops_before_anything_is_stored(project):
    folder, _ = coco_folder(project.parent)
    (folder / "annotations/instances_default.json").write_text("{not json")
    with pytest.raises(Exception, match="is not a COCO instances file"):
        run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder)}})
    assert not (project / "data/store").exists()
