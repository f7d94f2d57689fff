"""The demo data set: deterministic, valid COCO, varied, and every class present."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from cv_pipelines.demo.synthetic import DEMO_CLASSES, DemoDatasetSummary, generate_demo_dataset


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def load_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(path))


@pytest.fixture(scope="module")
def sixty(tmp_path_factory):
    """60 images of 96 px, seed 0: the data set most tests look at."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), num_images=60, image_size=96, seed=0)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate_demo_dataset(tmp_path / "a", num_images=6, image_size=96, seed=1)
    generate_demo_dataset(tmp_path / "b", num_images=6, image_size=96, seed=1)
    generate_demo_dataset(tmp_path / "c", num_images=6, image_size=96, seed=2)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert sorted(files(tmp_path / "a")) == [
        "annotations/instances_default.json",
        *(f"images/demo_{i:05d}.jpg" for i in range(6)),
    ]  # no temporary files left behind
    other = files(tmp_path / "c")
    for name, data in files(tmp_path / "a").items():
        assert other[name] != data, name
    # Running again into the same folder rewrites the very same bytes.
    before = files(tmp_path / "a")
    again = generate_demo_dataset(tmp_path / "a", num_images=6, image_size=96, seed=1)
    assert files(tmp_path / "a") == before
    assert again == a


def test_images_depend_on_seed_and_index_only(tmp_path):
    generate_demo_dataset(tmp_path / "few", num_images=3, image_size=64, seed=5)
    generate_demo_dataset(tmp_path / "many", num_images=5, image_size=64, seed=5)
    few, many = files(tmp_path / "few"), files(tmp_path / "many")
    for i in range(3):
        assert few[f"images/demo_{i:05d}.jpg"] == many[f"images/demo_{i:05d}.jpg"]
    # A smaller run into the folder of a larger one leaves no stray images behind.
    generate_demo_dataset(tmp_path / "many", num_images=3, image_size=64, seed=5)
    assert files(tmp_path / "many") == few


def test_coco_file_is_valid_and_boxes_fit_their_images(sixty: DemoDatasetSummary):
    coco = load_coco(sixty.annotations_file)
    raw = json.loads(sixty.annotations_file.read_text())
    assert raw["licenses"] == [] and "info" in raw
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
    assert [c["id"] for c in raw["categories"]] == list(range(1, len(DEMO_CLASSES) + 1))
    assert all(c["supercategory"] == "" for c in raw["categories"])
    assert sorted(coco.getImgIds()) == list(range(1, 61))
    assert [a["id"] for a in raw["annotations"]] == list(range(1, len(raw["annotations"]) + 1))
    for image in coco.loadImgs(coco.getImgIds()):
        assert image["file_name"] == f"demo_{image['id'] - 1:05d}.jpg"
        with Image.open(sixty.images_dir / image["file_name"]) as pixels:
            assert pixels.format == "JPEG" and pixels.mode == "RGB"
            assert pixels.size == (image["width"], image["height"]) == (96, 96)
            pixels.load()
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
            assert ann["area"] == pytest.approx(w * h) and ann["area"] > 0
            assert ann["iscrowd"] == 0 and ann["segmentation"] == []


def test_every_class_occurs_and_some_images_are_empty(sixty: DemoDatasetSummary):
    coco = load_coco(sixty.annotations_file)
    counts = sixty.boxes_per_class
    assert list(counts) == list(DEMO_CLASSES)
    assert all(counts[name] >= 5 for name in DEMO_CLASSES), counts
    assert sum(counts.values()) == sixty.num_boxes == len(coco.getAnnIds())
    assert sixty.num_images == 60
    empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=[i])]
    assert 1 <= len(empty) <= 6  # background images exist (5 % by default), but are few
    per_image = [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
    assert max(per_image) <= 6 and sum(n >= 3 for n in per_image) >= 10  # crowded scenes too
    sides = [max(a["bbox"][2], a["bbox"][3]) / 96 for a in coco.loadAnns(coco.getAnnIds())]
    assert min(sides) < 0.12 and max(sides) > 0.35  # small and large objects


def test_some_objects_touch_the_border_or_are_occluded(sixty: DemoDatasetSummary):
    raw = json.loads(sixty.annotations_file.read_text())
    boxes = [a["bbox"] for a in raw["annotations"]]
    at_border = [b for b in boxes if b[0] == 0 or b[1] == 0 or b[0] + b[2] == 96 or b[1] + b[3] == 96]
    assert len(at_border) >= 5
    assert any(a["attributes"]["occluded"] for a in raw["annotations"])


def test_backgrounds_are_textured_and_differ(tmp_path):
    summary = generate_demo_dataset(tmp_path, num_images=12, image_size=96, seed=0, max_objects=0, empty_fraction=1.0)
    assert summary.num_boxes == 0
    images = [np.asarray(Image.open(p)).astype(float) for p in sorted(summary.images_dir.glob("*.jpg"))]
    assert len(images) == 12
    for image in images:
        assert image.std() > 8  # never a flat colour
        assert np.abs(np.diff(image, axis=1)).mean() > 2  # nor a smooth one: texture and noise
    means = np.array([image.mean(axis=(0, 1)) for image in images])
    assert max(np.abs(a - b).sum() for a in means for b in means) > 60
    distinct = {tuple(np.round(m / 16)) for m in means}
    assert len(distinct) >= 8  # most backgrounds have a colour of their own


def test_class_subset_and_bad_arguments(tmp_path):
    summary = generate_demo_dataset(tmp_path / "two", num_images=10, image_size=64, classes=("star", "ring"))
    coco = load_coco(summary.annotations_file)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["star", "ring"]
    assert set(summary.boxes_per_class) == {"star", "ring"} and summary.num_boxes > 0
    with pytest.raises(ValueError, match="hexagon"):
        generate_demo_dataset(tmp_path / "bad", num_images=1, classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="empty_fraction"):
        generate_demo_dataset(tmp_path / "bad", num_images=1, empty_fraction=1.5)
