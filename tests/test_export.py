"""Export: versioned, deterministic YOLO data sets with splits that never move."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cv_pipelines.demo_data import generate_demo_dataset
from cv_pipelines.yolo_export import ExportCheckError, check_with_ultralytics, split_of
from tests.conftest import run_pipeline
from tests.support.images import image_bytes, write


def import_demo(project: Path, name: str, seed: int, n: int = 24) -> Path:
    folder = project.parent / name
    generate_demo_dataset(folder, num_images=n, image_size=96, seed=seed)
    run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder), "name": name}})
    return folder


def export(project: Path, **params) -> dict:
    extra = {"export": params.pop("export", {})} | params
    run_pipeline(project, "export", params=extra)
    return yaml.safe_load((project / "data/reporting/export/last_export.yml").read_text())


def splits_of(export_dir: Path) -> dict[str, str]:
    return {p.stem: p.parent.name for p in (export_dir / "images").glob("*/*")}


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "export_info.yaml"}


def test_export_layout_links_labels_and_ultralytics_check(project):
    import_demo(project, "demo_a", seed=1)
    summary = export(project)

    root = project / summary["path"]
    assert root.name == "demo_v1" and summary["written"]
    dataset = yaml.safe_load((root / "dataset.yaml").read_text())
    assert dataset["names"] == {0: "circle", 1: "square", 2: "triangle", 3: "star", 4: "ring"}
    assert (dataset["train"], dataset["val"], dataset["test"]) == ("images/train", "images/val", "images/test")
    info = yaml.safe_load((root / "export_info.yaml").read_text())
    assert sum(info["counts"]["images"].values()) == 24
    assert info["dataset_version"] == "working tree" and info["dataset_commit"] and info["registries_hash"]
    for image in (root / "images").glob("*/*"):
        stored = next((project / "data/store/images").rglob(image.name))
        assert os.stat(image).st_ino == os.stat(stored).st_ino  # a hard link, not a copy
        label = root / "labels" / image.parent.name / f"{image.stem}.txt"
        for line in label.read_text().splitlines():
            values = [float(v) for v in line.split()[1:]]
            assert all(0 <= v <= 1 for v in values)
    assert info["counts"]["images_without_boxes"]  # background images have empty label files
    assert check_with_ultralytics(root, 5)["checked_images"] == 24
    health = (project / "data/reporting/export/health.csv").read_text()
    assert health.startswith("split,class,images,boxes")
    assert (project / "data/reporting/export/health.png").stat().st_size > 1000


def test_same_inputs_same_bytes_and_no_second_version(project):
    import_demo(project, "demo_a", seed=1)
    first = export(project)
    before = tree_bytes(project / first["path"])
    again = export(project)
    assert (again["version"], again["written"]) == (1, False)
    assert tree_bytes(project / first["path"]) == before
    assert not (project / "data/exports/demo_v2").exists()


def test_adding_images_never_moves_an_image_to_another_split(project):
    import_demo(project, "demo_a", seed=1)
    v1 = splits_of(project / export(project)["path"])
    import_demo(project, "demo_b", seed=2)
    second = export(project)
    assert second["version"] == 2
    v2 = splits_of(project / second["path"])
    assert len(v2) == 48 and all(v2[image] == split for image, split in v1.items())


def test_class_ids_do_not_shift_when_a_class_is_appended(project):
    import_demo(project, "demo_a", seed=1)
    first = project / export(project)["path"]
    labels = ["circle", "square", "triangle", "star", "ring", "hexagon"]
    second = project / export(project, labeling={"labels": labels})["path"]
    assert second.name == "demo_v2"
    assert yaml.safe_load((second / "dataset.yaml").read_text())["names"][5] == "hexagon"
    for label in (first / "labels").glob("*/*.txt"):
        assert (second / "labels" / label.parent.name / label.name).read_text() == label.read_text()


def test_exclusions_are_left_out(project):
    folder = import_demo(project, "demo_a", seed=1)
    from cv_pipelines.ingest_images import read_images_registry

    registry = read_images_registry(project / "data/registry")
    victim = registry["image_id"].iloc[0]
    csv = project / "exclude.csv"
    csv.write_text(f"image_id,reason\n{victim},blurry\n")
    from cv_pipelines.labeling_cycle import add_exclusions_from_csv

    add_exclusions_from_csv(csv, registry=project / "data/registry", label_set="demo", lock_timeout_s=5)
    exported = splits_of(project / export(project)["path"])
    assert victim not in exported and len(exported) == 23
    assert folder.exists()


def test_rotated_jpegs_get_labels_in_the_frame_ultralytics_loads(project):
    from ultralytics.data.utils import verify_image_label

    folder = project.parent / "rotated"
    write(folder / "images/r6.jpg", image_bytes(1, size=(80, 40), exif_orientation=6))  # shown 40 wide, 80 high
    write(folder / "images/r8.jpg", image_bytes(2, size=(80, 40), exif_orientation=8))
    coco = {
        "images": [{"id": 1, "file_name": "r6.jpg", "width": 40, "height": 80},
                   {"id": 2, "file_name": "r8.jpg", "width": 40, "height": 80}],
        "categories": [{"id": 1, "name": "circle"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 50, 20, 25], "area": 500, "iscrowd": 0}
                        for i in (1, 2)],
    }
    write(folder / "annotations/instances_default.json", json.dumps(coco).encode())
    run_pipeline(project, "import_coco", params={"import_coco": {"source": str(folder)}})
    root = project / export(project)["path"]
    for image in (root / "images").glob("*/*.jpg"):
        label = root / "labels" / image.parent.name / f"{image.stem}.txt"
        result = verify_image_label((str(image), str(label), "", False, 5, 0, 0, False))
        shape, boxes, message = result[2], result[1], result[-1]
        assert tuple(shape) == (80, 40) and not message  # (height, width) after EXIF orientation
        assert boxes[0].tolist() == pytest.approx([0, 0.5, 0.78125, 0.5, 0.3125], abs=1e-5)


def test_a_corrupt_label_fails_the_check_naming_the_image(project):
    import_demo(project, "demo_a", seed=1)
    root = project / export(project)["path"]
    label = next((root / "labels/train").glob("*.txt"))
    label.write_text("7 0.5 0.5 2.0 0.1\n")
    with pytest.raises(ExportCheckError, match=label.stem):
        check_with_ultralytics(root, 5)


def test_coco_format_from_the_same_selection_and_split(project):
    from pycocotools.coco import COCO

    import_demo(project, "demo_a", seed=1)
    yolo = splits_of(project / export(project)["path"])
    coco_export = project / export(project, export={"format": "coco", "output_dir": "data/exports_coco"})["path"]
    seen = {}
    for split in ("train", "val", "test"):
        coco = COCO(str(coco_export / f"annotations/instances_{split}.json"))
        for image in coco.loadImgs(coco.getImgIds()):
            seen[Path(image["file_name"]).stem] = split
    assert seen == yolo


def test_split_is_a_pure_function_with_the_right_proportions():
    ids = [f"{i:064x}" for i in range(4000)]
    ratios = {"train": 0.8, "val": 0.1, "test": 0.1}
    counts = Counter(split_of(i, 0, ratios) for i in ids)
    assert abs(counts["train"] / 4000 - 0.8) < 0.03 and abs(counts["test"] / 4000 - 0.1) < 0.02
    assert [split_of(i, 0, ratios) for i in ids[:50]] == [split_of(i, 0, ratios) for i in ids[:50]]
    assert [split_of(i, 1, ratios) for i in ids[:200]] != [split_of(i, 0, ratios) for i in ids[:200]]


def test_export_at_an_old_dataset_version_reproduces_it(project):
    """Issue #5: snapshot v1, add a labeled batch, snapshot v2; an export at v1 equals v1."""
    import_demo(project, "demo_a", seed=1)
    run_pipeline(project, "snapshot")
    at_v1_time = export(project)
    import_demo(project, "demo_b", seed=2)
    run_pipeline(project, "snapshot")
    head = (project / ".git/HEAD").read_text()

    replay = export(project, dataset_version="data/demo/v1", export={"output_dir": "data/exports_replay"})

    assert replay["content_hash"] == at_v1_time["content_hash"]
    assert replay["registries_hash"] == at_v1_time["registries_hash"]
    assert replay["dataset_version"] == "data/demo/v1" and replay["dataset_commit"]
    assert tree_bytes(project / replay["path"]) | {"dataset.yaml": b""} == tree_bytes(project / at_v1_time["path"]) | {
        "dataset.yaml": b""}
    assert (project / ".git/HEAD").read_text() == head
