"""The demo data set: deterministic, valid COCO, varied, and every class present."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from cv_pipelines.demo_data import DEMO_CLASSES, generate_demo_dataset


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate_demo_dataset(tmp_path / "a", num_images=6, image_size=96, seed=1)
    generate_demo_dataset(tmp_path / "b", num_images=6, image_size=96, seed=1)
    generate_demo_dataset(tmp_path / "c", num_images=6, image_size=96, seed=2)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a")["images/demo_00000.jpg"] != files(tmp_path / "c")["images/demo_00000.jpg"]


def test_coco_file_is_valid_and_boxes_fit_their_images(tmp_path):
    summary = generate_demo_dataset(tmp_path, num_images=60, image_size=96, seed=0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(summary.annotations_file))
    assert len(coco.getImgIds()) == 60
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
    for image in coco.loadImgs(coco.getImgIds()):
        with Image.open(summary.images_dir / image["file_name"]) as pixels:
            assert pixels.size == (image["width"], image["height"]) == (96, 96)
            pixels.load()
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
    counts = summary.boxes_per_class
    assert all(counts[name] > 0 for name in DEMO_CLASSES)
    assert sum(counts.values()) == summary.num_boxes == len(coco.getAnnIds())
    empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=[i])]
    assert 0 < len(empty) < 20  # background images exist, but are a minority


def test_backgrounds_are_textured_and_differ(tmp_path):
    summary = generate_demo_dataset(tmp_path, num_images=12, image_size=96, seed=0, max_objects=0, empty_fraction=1.0)
    images = [np.asarray(Image.open(p)).astype(float) for p in sorted(summary.images_dir.glob("*.jpg"))]
    assert all(image.std() > 5 for image in images)  # never a flat colour
    means = [image.mean(axis=(0, 1)) for image in images]
    assert max(np.abs(a - b).sum() for a in means for b in means) > 60
    assert summary.num_boxes == 0
