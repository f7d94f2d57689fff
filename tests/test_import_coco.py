"""COCO import: images through ingestion, boxes into the annotations registry, idempotent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cv_pipelines.config.loader import section_parameters
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.images.ingestion import (
    StoreLayout,
    check_new_images,
    commit_ingestion,
    list_new_images,
    plan_ingestion,
    read_images_registry,
)
from cv_pipelines.pipelines.import_coco.nodes import read_coco_folder, register_coco_boxes
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
        # A declared category no box uses (CVAT lists every label of the task) is no reason to stop.
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "unicorn"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "area": 600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [90, 70, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [70, 10, 5, 5], "area": 25, "iscrowd": 0},
            {
                "id": 5,
                "image_id": 2,
                "category_id": 1,
                "bbox": [5, 5, 10, 10],
                "area": 100,
                "iscrowd": 0,
                "attributes": {"occluded": True, "rotation": 0.0},
            },
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

    summary = yaml.safe_load((project / "data/reporting/import_coco/last_import.yml").read_text())
    text = yaml.safe_dump(summary)
    assert "missing.jpg" in text and "degenerate" in text
    assert summary["classes"] == LABELS and summary["classes_added"] == []
    assert not (project / "data/registry/label_sets").exists()  # nothing added: no classes recorded


def _data_fingerprint(project: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder of the store, the registries and the quarantine: (size, mtime) by path.

    What a snapshot compares (it looks at modification times first) and what a user sees.
    """
    files = {}
    for part in ("store", "registry", "quarantine"):
        for path in sorted((project / "data" / part).rglob("*")):
            if not path.name.endswith(".lock") and "_journal" not in path.parts:  # the lock and journals come and go
                stat = path.stat()
                files[path.relative_to(project).as_posix()] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return files


def test_reimporting_unchanged_input_changes_nothing_rejections_included(project):
    folder, _ = coco_folder(project.parent)
    params = {"import_coco": {"source": str(folder)}}
    run_pipeline(project, "import_coco", params=params)
    first = _data_fingerprint(project)
    run_pipeline(project, "import_coco", params=params)

    assert _data_fingerprint(project) == first  # no new part, no new quarantine copy, no rewritten file
    assert len(registry_parts.read_registry(project / "data/registry/annotations")) == 3
    assert len(registry_parts.read_registry(project / "data/registry/labels")) == 3
    assert len(read_images_registry(project / "data/registry")) == 3
    rejections = registry_parts.read_registry(project / "data/registry/rejections")
    assert rejections["original_path"].tolist() == ["broken.jpg"]
    assert len(list((project / "data/quarantine").rglob("broken.jpg"))) == 1
    summary = yaml.safe_load((project / "data/reporting/import_coco/last_import.yml").read_text())
    assert summary["images_rejected"] == 1  # still reported, just not recorded twice


def test_import_without_a_source_says_how_to_give_one(project):
    result = kedro_cli(project, "run", "--pipelines", "import_coco", env=None)
    assert result.exit_code == 2, result.output
    assert "--params import_coco.source=<folder>" in result.stderr
    assert isinstance(result.exception, SystemExit)  # one sentence, not a traceback


def test_a_broken_coco_file_stops_before_anything_is_stored(project):
    folder, _ = coco_folder(project.parent)
    (folder / "annotations/instances_default.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"instances_default\.json is not valid JSON .*line 1, column 2"):
        run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder)}})
    assert not (project / "data/store").exists()


def test_a_folder_whose_name_cannot_name_the_import_needs_import_coco_name(tmp_path):
    from cv_pipelines.annotations.coco_import import CocoSourceError, read_coco_source

    for i, folder_name in enumerate(("my data", "..hidden", "con")):
        made, _ = coco_folder(tmp_path / str(i))
        folder = made.rename(made.parent / folder_name)
        with pytest.raises(CocoSourceError, match=r"named after its folder, but .* cannot|reserved") as raised:
            read_coco_source(folder)
        assert raised.value.parameter == "name"
        assert read_coco_source(folder, name="demo").name == "demo"  # a given name is the parameters' to check


# --- categories outside the label set ----------------------------------------------------------
# A data set of one's own, labeled box, circle, disc and tri: one category the demo's label set
# knows and three it does not. o4 has one box, degenerate (outside its 64x48 image); o5 none.

OWN_CATEGORIES = ["box", "circle", "disc", "tri"]


def own_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """The folder ``own_set`` and its images' ids by file name."""
    folder = root / "own_set"
    boxes = {
        "o1.jpg": [("box", 5, 5, 20, 20), ("circle", 30, 10, 20, 20)],
        "o2.jpg": [("disc", 10, 10, 15, 15), ("tri", 2, 2, 10, 10)],
        "o3.jpg": [("tri", 40, 20, 10, 10), ("box", 1, 1, 30, 30)],
        "o4.jpg": [("box", 70, 10, 5, 5)],
        "o5.jpg": [],
    }
    ids, images, annotations = {}, [], []
    for i, (name, shapes) in enumerate(boxes.items(), start=1):
        data = image_bytes(40 + i, size=(64, 48))
        write(folder / "images" / name, data)
        ids[name] = hashlib.sha256(data).hexdigest()
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
        for label, *bbox in shapes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i, "category_id": OWN_CATEGORIES.index(label) + 1, "bbox": bbox}
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(OWN_CATEGORIES, start=1)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    write(folder / "annotations/instances_default.json", json.dumps(coco).encode())
    return folder, ids


def data_tree(project: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``data/``, locks, journals and the MLflow store included."""
    return {
        path.relative_to(project).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted((project / "data").rglob("*"))
    }


def import_params(folder: Path, **extra) -> dict:
    return {"import_coco": {"source": str(folder), **extra}}


def test_categories_outside_the_label_set_stop_the_import_before_anything_is_written(project):
    folder, _ = coco_folder(project.parent)
    run_pipeline(project, "import_coco", params=import_params(folder))  # registries, store and quarantine exist
    own, _ = own_folder(project.parent)
    before = data_tree(project)
    mtimes = {p: (project / p).stat().st_mtime_ns for p in before}

    result = kedro_cli(project, "run", "--pipelines", "import_coco", "--params", f"import_coco.source={own}")

    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and "Traceback" not in result.output  # one sentence
    sentence = errors[0]
    assert "has 6 box(es) labeled with 3 categories outside label set 'demo'" in sentence
    assert "'box' (3 boxes), 'disc' (1 box), 'tri' (2 boxes); nothing was imported" in sentence  # the file's order
    assert "import_coco.unknown_categories to append" in sentence and "to new_label_set with import_coco.label_set=" in sentence
    # Nothing written: registries byte for byte, the store, quarantine, reports, the MLflow store (no failed run).
    assert data_tree(project) == before
    assert {p: (project / p).stat().st_mtime_ns for p in before} == mtimes


def test_append_adds_the_files_categories_at_the_end_and_old_class_ids_never_move(project):
    folder, _ = coco_folder(project.parent)
    run_pipeline(project, "import_coco", params=import_params(folder))
    run_pipeline(project, "export")
    v1 = project / "data/exports/demo_v1"
    own, own_ids = own_folder(project.parent)

    run_pipeline(project, "import_coco", params=import_params(own, unknown_categories="append"))

    classes = registry_parts.read_registry(project / "data/registry/label_sets")
    assert classes["label"].tolist() == [*LABELS, "box", "disc", "tri"]  # circle is known: not appended
    assert classes["class_id"].tolist() == list(range(8)) and set(classes["label_set"]) == {"demo"}
    assert classes["added_by"].tolist() == ["labeling.labels"] * 5 + ["coco:own_set"] * 3
    summary = yaml.safe_load((project / "data/reporting/import_coco/last_import.yml").read_text())
    assert summary["classes_added"] == ["box", "disc", "tri"] and summary["boxes"] == 6
    # o4's only box is degenerate: set aside with its reason, not labeled as an image with no objects;
    # o5 has no annotation at all: a background image, as before.
    labels = registry_parts.read_registry(project / "data/registry/labels").set_index("image_id")
    assert own_ids["o4.jpg"] not in labels.index and labels.loc[own_ids["o5.jpg"], "num_boxes"] == 0
    assert summary["left_out_by_reason"] == {"degenerate box": 1, "image whose boxes were all left out": 1}
    assert "frame 'o4.jpg' had 1 box(es), all left out" in summary["left_out_records"]["image whose boxes were all left out"][0]

    # The export reads the recorded classes: the old ones keep their ids, the new ones follow.
    run_pipeline(project, "export")
    v2 = project / "data/exports/demo_v2"
    assert yaml.safe_load((v1 / "dataset.yaml").read_text())["names"] == dict(enumerate(LABELS))
    assert yaml.safe_load((v2 / "dataset.yaml").read_text())["names"] == dict(enumerate([*LABELS, "box", "disc", "tri"]))
    old_labels = sorted(p.relative_to(v1) for p in (v1 / "labels").rglob("*.txt"))
    assert old_labels and all((v2 / p).read_bytes() == (v1 / p).read_bytes() for p in old_labels)
    [o1] = list((v2 / "labels").rglob(f"{own_ids['o1.jpg']}.txt"))
    assert sorted(line.split()[0] for line in o1.read_text().splitlines()) == ["0", "5"]  # circle, box

    # Importing the same folder again changes nothing.
    before = _data_fingerprint(project)
    run_pipeline(project, "import_coco", params=import_params(own, unknown_categories="append"))
    assert _data_fingerprint(project) == before

    # labeling.labels may grow after the recorded classes, never reorder them.
    with pytest.raises(ConfigurationError) as refused:
        run_pipeline(project, "export", params={"labeling": {"labels": [*LABELS, "hex"]}})
    assert refused.value.message == (
        "labeling.labels (circle, square, triangle, star, ring, hex) disagrees with the classes recorded for label "
        "set 'demo' in the label_sets registry (circle, square, triangle, star, ring, box, disc, tri), so class ids "
        "would move; set labeling.labels to [circle, square, triangle, star, ring, box, disc, tri, hex] (new labels "
        "at the end)."
    )
    from cv_pipelines.annotations.label_sets import label_set_classes

    longer = [*LABELS, "box", "disc", "tri", "hex"]
    assert label_set_classes("demo", classes, labeling_set="demo", labeling_labels=longer, parameter="x") == longer


def test_new_label_set_takes_its_classes_from_the_file(project):
    own, own_ids = own_folder(project.parent)
    params = import_params(own, unknown_categories="new_label_set", label_set="shapes")
    run_pipeline(project, "import_coco", params=params)

    classes = registry_parts.read_registry(project / "data/registry/label_sets")
    assert classes["label"].tolist() == OWN_CATEGORIES and set(classes["label_set"]) == {"shapes"}
    boxes = registry_parts.read_registry(project / "data/registry/annotations")
    assert set(boxes["label_set"]) == {"shapes"} and len(boxes) == 6  # o4's box is degenerate
    labels = registry_parts.read_registry(project / "data/registry/labels")
    assert set(labels["label_set"]) == {"shapes"} and own_ids["o4.jpg"] not in set(labels["image_id"])

    run_pipeline(project, "export", params={"export": {"label_set": "shapes"}})  # labeling.label_set stays demo
    dataset = yaml.safe_load((project / "data/exports/shapes_v1/dataset.yaml").read_text())
    assert dataset["names"] == dict(enumerate(OWN_CATEGORIES))

    before = _data_fingerprint(project)
    run_pipeline(project, "import_coco", params=params)  # again: the set it made, unchanged
    assert _data_fingerprint(project) == before


# --- bad COCO input, one table ----------------------------------------------------------------
# Each case is one COCO file next to the same stored images; the import's nodes run in-process
# (no Kedro session), so a case costs milliseconds. A file-level problem must stop the import
# with one sentence naming the file; a record-level one must leave the record out, counted
# under its reason, and nothing wrong may reach the rows the registries would hold.

REPO = Path(__file__).resolve().parents[1]
SIZES = {"a.jpg": (100, 80), "b.png": (60, 40), "c.jpg": (50, 50)}


def _image(i: int, name: str, **extra) -> dict:
    width, height = SIZES.get(name, (10, 10))
    return {"id": i, "file_name": name, "width": width, "height": height} | extra


def _ann(i, image_id=1, category_id=1, bbox=(10, 10, 20, 30), **extra) -> dict:
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": list(bbox)} | extra


def _doc(images=None, annotations=None, categories=None, **top) -> dict:
    return {
        "images": [_image(1, "a.jpg"), _image(2, "b.png"), _image(3, "c.jpg")] if images is None else images,
        "annotations": [_ann(1), _ann(2, image_id=2, category_id=2, bbox=(5, 5, 10, 10))]
        if annotations is None
        else annotations,
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "unicorn"}]
        if categories is None
        else categories,
    } | top


def _json(value) -> bytes:
    return json.dumps(value).encode()


def _without(key: str) -> dict:
    doc = _doc()
    del doc[key]
    return doc


_BASE = _doc()
_NESTED = b"[" * 100_000 + b"]" * 100_000
_NON_UTF8 = _json(_BASE).replace(b'"circle"', b'"circ\xffle"')

#: (case, file bytes, refused: sentence fragments | None, left out: {reason: count}, fragments, boxes kept)
REFUSED = [
    ("empty file", b"", ["is empty"]),
    ("only whitespace", b"  \n", ["is empty"]),
    ("non-UTF-8 bytes", _NON_UTF8, ["is not UTF-8 text (byte 0xff at offset", "save it as UTF-8"]),
    ("invalid JSON", b"{not json", ["is not valid JSON", "line 1, column 2"]),
    ("truncated JSON", _json(_BASE)[:-7], ["is not valid JSON"]),
    ("deeply nested JSON", _NESTED, ["nests JSON deeper than it can be read"]),
    ("top level a list", _json([_BASE]), ["holds a JSON list, not an object"]),
    ("top level a number", b"42", ["holds a JSON number, not an object"]),
    ("top level null", b"null", ["holds a JSON null"]),
    ("no categories key", _json(_without("categories")), ["categories is missing"]),
    ("no images key", _json(_without("images")), ["images is missing"]),
    ("no annotations key", _json(_without("annotations")), ["annotations is missing", '"annotations": []']),
    ("images not a list", _json(_doc(images={"1": _image(1, "a.jpg")})), ["images: input should be a valid list"]),
    ("annotations null", _json(_doc() | {"annotations": None}), ["annotations: input should be a valid list"]),
    (
        "category without a name",
        _json(_doc(categories=[{"id": 1}])),
        ["categories[0] (id 1) is not a category", "name is missing"],
    ),
    ("category not an object", _json(_doc(categories=["circle"])), ["categories[0] is not a category"]),
    (
        "category id reused",
        _json(_doc(categories=[{"id": 1, "name": "circle"}, {"id": 1, "name": "square"}])),
        ["categories[1] (id 1) reuses id 1", "give each category its own id"],
    ),
    (
        "a box labeled outside the label set",
        _json(_doc(annotations=[_ann(1, category_id=3), _ann(2), _ann(3, category_id=3, bbox=(1, 1, 5, 5))])),
        [
            "has 2 box(es) labeled with 1 category outside label set 'demo' (circle, square, triangle, star, ring)",
            "'unicorn' (2 boxes); nothing was imported",
            "import_coco.unknown_categories to append",
            "to new_label_set with import_coco.label_set=<new name>",
        ],
    ),
    (
        "integer of 5000 digits",
        _json(_BASE).replace(b'"id": 1,', b'"id": ' + b"9" * 5000 + b",", 1),
        ["holds a value JSON cannot read"],
    ),
]

#: The reason of an image whose boxes were all left out: set aside, never labeled as background.
SET_ASIDE = "image whose boxes were all left out"

LEFT_OUT = [
    # (case, file bytes, {reason: count}, sentence fragments, boxes kept)
    ("valid file", _json(_BASE), {}, [], 2),
    ("UTF-8 with a BOM", b"\xef\xbb\xbf" + _json(_BASE), {}, [], 2),
    ("UTF-16 with a BOM", json.dumps(_BASE).encode("utf-16"), {}, [], 2),
    (
        "string ids throughout",
        _json(
            _doc(
                images=[_image("a", "a.jpg"), _image("b", "b.png")],
                annotations=[_ann("x", image_id="a", category_id="c")],
                categories=[{"id": "c", "name": "circle"}],
            )
        ),
        {},
        [],
        1,
    ),
    (
        "two annotations sharing an id, different boxes",
        _json(_doc(annotations=[_ann(7), _ann(7, bbox=(50, 50, 10, 10))])),
        {},
        [],
        2,
    ),
    (
        "NaN coordinate",
        _json(_doc(annotations=[_ann(1, bbox=(10, 10, float("nan"), 5)), _ann(2)])),
        {"invalid annotation record": 1},
        ["annotations[0] (id 1) was left out: bbox[2]: input should be a finite number"],
        1,
    ),
    (
        "[0, 0, inf, inf]",
        _json(_doc(annotations=[_ann(1, bbox=(0, 0, float("inf"), float("inf")))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox[2]: input should be a finite number", "four finite pixel numbers"],
        0,
    ),
    (
        "-Infinity",
        _json(_doc(annotations=[_ann(1, bbox=(float("-inf"), 0, 1, 1))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox[0]"],
        0,
    ),
    (
        "1e400 (read as infinity)",
        _json(_doc()).replace(b"[10, 10, 20, 30]", b"[10, 10, 1e400, 30]"),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["finite number"],
        1,
    ),
    (
        "x + width overflows",
        _json(_doc(annotations=[_ann(1, bbox=(1e308, 0, 1e308, 5))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox reaches beyond any finite coordinate"],
        0,
    ),
    (
        "huge finite box",
        _json(_doc(annotations=[_ann(1, bbox=(0, 0, 1e300, 1e300))])),
        {"box far outside the image": 1, SET_ASIDE: 1},
        ["frame 'a.jpg' has a 'circle' box", "beyond the 100x80 image"],
        0,
    ),
    (
        "huge integer box",
        _json(_doc()).replace(b"[10, 10, 20, 30]", b"[0, 0, 1" + b"0" * 400 + b", 5]"),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox[2]: input should be a valid number"],
        1,
    ),
    (
        "negative width",
        _json(_doc(annotations=[_ann(1, bbox=(50, 10, -20, 30))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["negative width or height"],
        0,
    ),
    (
        "negative height",
        _json(_doc(annotations=[_ann(1, bbox=(50, 50, 20, -30))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["negative width or height"],
        0,
    ),
    (
        "zero width",
        _json(_doc(annotations=[_ann(1, bbox=(50, 10, 0, 30))])),
        {"degenerate box": 1, SET_ASIDE: 1},
        ["is degenerate"],
        0,
    ),
    (
        "box entirely outside the image",
        _json(_doc(annotations=[_ann(1, bbox=(120, 10, 10, 10))])),
        {"degenerate box": 1, SET_ASIDE: 1},
        ["less than 1 px inside the 100x80 image"],
        0,
    ),
    (
        "box far below the image",
        _json(_doc(annotations=[_ann(1, bbox=(10, 500, 10, 10))])),
        {"box far outside the image": 1, SET_ASIDE: 1},
        ["beyond the 100x80 image"],
        0,
    ),
    (
        "bbox of three numbers",
        _json(_doc(annotations=[_ann(1, bbox=(1, 2, 3))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox: list should have at least 4 items"],
        0,
    ),
    (
        "bbox of five numbers",
        _json(_doc(annotations=[_ann(1, bbox=(1, 2, 3, 4, 5))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox: list should have at most 4 items"],
        0,
    ),
    (
        "bbox of strings",
        _json(_doc(annotations=[_ann(1, bbox=("10", "10", "20", "30"))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox[0]: input should be a valid number"],
        0,
    ),
    (
        "bbox of booleans",
        _json(_doc(annotations=[_ann(1, bbox=(True, 1, 5, 5))])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox[0]"],
        0,
    ),
    (
        "bbox null",
        _json(_doc(annotations=[_ann(1) | {"bbox": None}])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["bbox: input should be a valid list"],
        0,
    ),
    (
        "missing bbox",
        _json(_doc(annotations=[{"id": 1, "image_id": 1, "category_id": 1}, _ann(2)])),
        {"invalid annotation record": 1},
        ["annotations[0] (id 1) was left out: bbox is missing"],
        1,
    ),
    (
        "annotation not an object",
        _json(_doc(annotations=["box", _ann(2)])),
        {"invalid annotation record": 1},
        ["annotations[0] was left out: the record is a JSON string"],
        1,
    ),
    (
        "annotation attributes not an object",
        _json(_doc(annotations=[_ann(1, attributes=5)])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["attributes: input should be"],
        0,
    ),
    (
        "float image_id",
        _json(_doc(annotations=[_ann(1, image_id=1.0)])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["image_id: should be an integer or a non-empty string"],
        0,
    ),
    (
        "boolean id",
        _json(_doc(annotations=[_ann(True)])),
        {"invalid annotation record": 1, SET_ASIDE: 1},
        ["id: should be an integer"],
        0,
    ),
    (
        "missing file_name",
        _json(_doc(images=[{"id": 1, "width": 100, "height": 80}, _image(2, "b.png")])),
        {"invalid image record": 1, "box of an image left out": 1},
        [
            "images[0] (id 1) was left out with its boxes: file_name is missing",
            "annotations[0] (id 1) belongs to image 1, which was left out",
        ],
        1,
    ),
    (
        "file_name a number",
        _json(_doc(images=[{"id": 1, "file_name": 5}, _image(2, "b.png")])),
        {"invalid image record": 1, "box of an image left out": 1},
        ["file_name: input should be a valid string"],
        1,
    ),
    (
        "negative image width",
        _json(_doc(images=[_image(1, "a.jpg", width=-1), _image(2, "b.png")])),
        {"invalid image record": 1, "box of an image left out": 1},
        ["width: input should be greater than or equal to 0"],
        1,
    ),
    (
        "image not an object",
        _json(_doc(images=[7, _image(2, "b.png")])),
        {"invalid image record": 1, "box of a missing image": 1},
        ["images[0] was left out", "JSON number"],
        1,
    ),
    (
        "two images sharing an id",
        _json(_doc(images=[_image(1, "a.jpg"), _image(1, "c.jpg"), _image(2, "b.png")])),
        {"image id shared by different images": 2, "box of an image left out": 1},
        ["images[1] (id 1) shares id 1 with another image (images[0], images[1])", "give each image its own id"],
        1,
    ),
    (
        "an image record repeated",
        _json(_doc(images=[_image(1, "a.jpg"), _image(1, "a.jpg"), _image(2, "b.png")])),
        {"repeated image record": 1},
        ["images[1] (id 1) repeats images[0]"],
        2,
    ),
    (
        "two images sharing a file_name",
        _json(_doc(images=[_image(1, "a.jpg"), _image(5, "a.jpg"), _image(2, "b.png")])),
        {"image file_name shared by different images": 2, "box of an image left out": 1},
        ["shares file_name 'a.jpg'", "merge the records"],
        1,
    ),
    (
        "annotation of a missing image",
        _json(_doc(annotations=[_ann(1, image_id=99), _ann(2)])),
        {"box of a missing image": 1},
        ["annotations[0] (id 1) names image_id 99, which is not among the file's images"],
        1,
    ),
    (
        "mixed int/str ids",
        _json(_doc(annotations=[_ann(1, image_id="1"), _ann(2)])),
        {"box of a missing image": 1},
        ["image_id '1'", "give ids one type"],
        1,
    ),
    (
        "unknown category id",
        _json(_doc(annotations=[_ann(1, category_id=42), _ann(2)])),
        {"unknown category": 1},
        ["names category_id 42, which is not among the file's categories"],
        1,
    ),
    (
        "an annotation repeated",
        _json(_doc(annotations=[_ann(1), _ann(1)])),
        {"repeated annotation record": 1},
        ["annotations[1] (id 1) repeats annotations[0]"],
        1,
    ),
    (
        "the same box under two ids",
        _json(_doc(annotations=[_ann(1), _ann(2)])),
        {"duplicate box": 1},
        ["box [10, 10, 30, 40] twice; it was kept once"],
        1,
    ),
    (
        "the same box, once clipped",
        _json(_doc(annotations=[_ann(1, bbox=(90, 70, 10, 10)), _ann(2, bbox=(90, 70, 30, 30))])),
        {"duplicate box": 1},
        ["twice"],
        1,
    ),
    (
        "a frame with no image file",
        _json(_doc(images=[_image(1, "a.jpg"), _image(2, "b.png"), _image(9, "x.jpg")])),
        {"frame without a stored image": 1},
        ["frame 'x.jpg' matches no stored image"],
        2,
    ),
    (
        "two names of the same bytes, same boxes",
        _json(
            _doc(
                images=[_image(1, "a.jpg"), _image(4, "a_copy.jpg", width=100, height=80)],
                annotations=[_ann(1), _ann(2, image_id=4)],
            )
        ),
        {"frame repeating an image": 1},
        ["frame 'a_copy.jpg' is the same image (same bytes) as frame 'a.jpg'"],
        1,
    ),
    (
        "two names of the same bytes, different boxes",
        _json(
            _doc(
                images=[_image(1, "a.jpg"), _image(4, "a_copy.jpg", width=100, height=80)],
                annotations=[_ann(1), _ann(2, image_id=4, bbox=(50, 50, 5, 5))],
            )
        ),
        {"frames of one image with different boxes": 2},
        ["with different boxes; it was left out"],
        0,
    ),
    (
        "labeled at another image size",
        _json(_doc(images=[_image(1, "a.jpg", width=200, height=160), _image(2, "b.png")])),
        {"image size differs from the stored image": 1},
        ["labeled as a 200x160 image but the stored image is 100x80"],
        1,
    ),
    (
        "size given rotated (EXIF)",
        _json(_doc(images=[_image(1, "a.jpg", width=80, height=100), _image(2, "b.png")])),
        {},
        [],
        2,
    ),
    ("size unknown (0)", _json(_doc(images=[_image(1, "a.jpg", width=0, height=0), _image(2, "b.png")])), {}, [], 2),
    (
        "path-traversal file_name",
        _json(_doc(images=[_image(1, "../../../etc/a.jpg", width=100, height=80), _image(2, "b.png")])),
        {"frame without a stored image": 0},
        [],
        2,
    ),  # matched by its unique name a.jpg inside the folder
]


@pytest.fixture(scope="module")
def stored_folder(tmp_path_factory: pytest.TempPathFactory):
    """A labeled folder's images, committed once into a store; each case only writes its COCO file."""
    root = tmp_path_factory.mktemp("coco_cases")
    folder = root / "labeled"
    for seed, (name, size) in enumerate(SIZES.items(), start=1):
        write(folder / "images" / name, image_bytes(seed, size=size, fmt="PNG" if name.endswith("png") else "JPEG"))
    write(folder / "images/a_copy.jpg", (folder / "images/a.jpg").read_bytes())
    params = section_parameters("ingestion", root=REPO, workers=1, show_progress=False, source_id="coco:labeled")
    plan = plan_ingestion(check_new_images(list_new_images(folder / "images"), params), params, consume_source=False)
    layout = StoreLayout(root, Path("store"), Path("registry"), Path("quarantine"))
    commit_ingestion(plan, layout)
    return folder, plan, read_images_registry(layout.registry)


def _import(stored_folder, data: bytes, caplog=None):
    """The import's nodes on ``data``: (annotation rows, label rows, summary)."""
    folder, plan, images = stored_folder
    (folder / "case.json").write_bytes(data)
    params = section_parameters("import_coco", root=REPO, annotations="case.json", name="labeled")
    labeling = section_parameters("labeling", root=REPO, labels=LABELS, label_set="demo")
    source = read_coco_folder(folder, params, labeling, pd.DataFrame())
    _, annotations, labels, summary = register_coco_boxes(source, plan, images, params)
    (boxes,), (labeled,) = annotations.parts.values(), labels.parts.values()
    return boxes.to_pandas(), labeled.to_pandas(), summary


@pytest.mark.parametrize(("data", "fragments"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_a_coco_file_that_is_not_one_is_refused_in_one_sentence_naming_it(stored_folder, data, fragments):
    with pytest.raises(ConfigurationError) as raised:
        _import(stored_folder, data)
    message = raised.value.message
    assert message.startswith(str(stored_folder[0] / "case.json"))  # the file, in full
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message  # one sentence
    assert "Traceback" not in message and len(message) < 600
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("data", "left_out", "fragments", "boxes_kept"), [case[1:] for case in LEFT_OUT], ids=[case[0] for case in LEFT_OUT]
)
def test_a_bad_coco_record_is_left_out_counted_and_never_reaches_the_registries(
    stored_folder, data, left_out, fragments, boxes_kept
):
    boxes, labeled, summary = _import(stored_folder, data)

    left_out = {reason: n for reason, n in left_out.items() if n}
    assert summary["left_out_by_reason"] == left_out
    assert summary["left_out"] == sum(left_out.values()) == sum(len(s) for s in summary["left_out_records"].values())
    sentences = [s for group in summary["left_out_records"].values() for s in group]
    assert all(s.startswith("case.json: ") and "\n" not in s for s in sentences)  # each names the file and record
    for fragment in fragments:
        assert any(fragment in s for s in sentences), (fragment, sentences)
    # What the registries would hold: finite boxes inside their image, each once, each image labeled once.
    assert len(boxes) == boxes_kept
    coords = boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy(dtype=float)
    assert np.isfinite(coords).all()
    assert (coords[:, 0] < coords[:, 2]).all() and (coords[:, 1] < coords[:, 3]).all() and (coords >= 0).all()
    assert not boxes.duplicated(["image_id", "label", "x_min", "y_min", "x_max", "y_max"]).any()
    assert not labeled["image_id"].duplicated().any()
    assert set(boxes["image_id"]) <= set(labeled["image_id"])
    # An image some record gave a box is never labeled as one with no objects (it is set aside).
    doc = json.loads(data)
    named = {str(a.get("image_id")) for a in doc["annotations"] if isinstance(a, dict)}
    annotated = {i.get("file_name") for i in doc["images"] if isinstance(i, dict) and str(i.get("id")) in named}
    names = stored_folder[2].set_index("image_id")["original_path"]
    backgrounds = {names[i] for i in labeled.loc[labeled["num_boxes"] == 0, "image_id"]}
    assert not backgrounds & annotated


@pytest.mark.parametrize(
    "bad",
    [
        _ann(1, bbox=(10, 10, float("nan"), 5)),
        _ann(1, bbox=(120, 10, 10, 10)),
        _ann(1, bbox=(0, 500, 10, 10)),
        _ann(1, category_id=42),
        _ann(1, image_id="1"),
    ],
    ids=["invalid record", "degenerate box", "box far outside", "undeclared category", "image id of another type"],
)
def test_an_image_whose_boxes_were_all_left_out_is_set_aside_and_one_without_boxes_stays_background(
    stored_folder, bad
):
    # a.jpg: its one box is bad; b.png: one of its two boxes is; c.jpg: no annotation at all.
    doc = _doc(annotations=[bad, _ann(2, image_id=2, bbox=(5, 5, 10, 10)), _ann(3, image_id=2, bbox=(0, 0, 0, 5))])
    _, labeled, summary = _import(stored_folder, _json(doc))

    names = stored_folder[2].set_index("image_id")["original_path"]
    assert {names[i]: n for i, n in zip(labeled["image_id"], labeled["num_boxes"], strict=True)} == {
        "b.png": 1,
        "c.jpg": 0,
    }
    assert summary["left_out_by_reason"][SET_ASIDE] == 1
    [sentence] = summary["left_out_records"][SET_ASIDE]
    assert sentence.startswith("case.json: frame 'a.jpg' had 1 box(es), all left out (each for its reason), so it ")


def test_many_bad_records_are_counted_in_full_but_logged_without_a_flood(stored_folder, caplog):
    bad = [_ann(i, bbox=(0, 0, float("nan"), 1)) for i in range(500)]
    with caplog.at_level("WARNING", logger="cv_pipelines"):
        _, _, summary = _import(stored_folder, _json(_doc(annotations=bad)))
    assert summary["left_out"] == 501
    assert summary["left_out_by_reason"] == {"invalid annotation record": 500, SET_ASIDE: 1}  # a.jpg has no box left
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 21
    assert f"481 more record(s) left out (480 invalid annotation record, 1 {SET_ASIDE})" in warnings[-1]
    assert len(summary["left_out_records"]["invalid annotation record"]) == 100  # the file stays readable
