"""A synthetic, learnable object-detection data set the project makes itself.

Shapes of five classes (circle, square, triangle, star, ring) with their own colours
and textures, at scales from small to large, rotated, partly hidden by one another or
by the image border, over textured backgrounds (value noise, gradients, stripes,
checkers) with distractor strokes that are not objects, then global lighting, blur and
sensor noise. Every image depends only on ``(seed, index)``, so the same arguments
give byte-identical files. Boxes are the tight bounds of each object's visible pixels.

The layout is the one CVAT's "COCO 1.0" export uses, so the project's COCO import
reads it like any labeled data set::

    <output_dir>/images/demo_00000.jpg ...
    <output_dir>/annotations/instances_default.json

>>> summary = generate_demo_dataset("/tmp/demo", num_images=8, image_size=128, seed=0)
>>> summary.num_images
8
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")

#: An object whose visible part is less than this fraction of its full area is not placed.
_MIN_VISIBLE_FRACTION = 0.55
_PLACEMENT_TRIES = 12


@dataclass(frozen=True)
class DemoDatasetSummary:
    root: Path
    images_dir: Path
    annotations_file: Path
    num_images: int
    num_boxes: int
    boxes_per_class: dict[str, int]


def generate_demo_dataset(
    output_dir: Path | str,
    *,
    num_images: int = 300,
    image_size: int = 256,
    seed: int = 0,
    classes: Sequence[str] = DEMO_CLASSES,
    max_objects: int = 6,
    empty_fraction: float = 0.05,
) -> DemoDatasetSummary:
    """Write ``num_images`` JPEGs and their COCO instances file; deterministic for a seed."""
    unknown = [name for name in classes if name not in _SHAPES]
    if unknown:
        raise ValueError(f"no demo shape for class(es) {unknown}; available: {', '.join(DEMO_CLASSES)}")
    root = Path(output_dir)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    category_ids = {name: i + 1 for i, name in enumerate(classes)}
    coco_images, coco_annotations = [], []
    per_class = {name: 0 for name in classes}
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        empty = rng.random() < empty_fraction
        image, boxes = _render_scene(rng, image_size, list(classes), 0 if empty else max_objects)
        file_name = f"demo_{index:05d}.jpg"
        _write_atomically(images_dir / file_name, _jpeg_bytes(image))
        coco_images.append({"id": index + 1, "file_name": file_name, "width": image_size, "height": image_size})
        for label, (x1, y1, x2, y2) in boxes:
            w, h = float(x2 - x1), float(y2 - y1)
            coco_annotations.append(
                {
                    "id": len(coco_annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category_ids[label],
                    "bbox": [float(x1), float(y1), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [],
                    "attributes": {"occluded": False, "rotation": 0.0},
                }
            )
            per_class[label] += 1
    coco = {
        "info": {"description": f"cv_pipelines synthetic demo (seed {seed})", "version": "1.0"},
        "licenses": [],
        "categories": [{"id": cid, "name": name, "supercategory": ""} for name, cid in category_ids.items()],
        "images": coco_images,
        "annotations": coco_annotations,
    }
    annotations_file = root / "annotations" / "instances_default.json"
    _write_atomically(annotations_file, json.dumps(coco, indent=1).encode())
    return DemoDatasetSummary(
        root=root,
        images_dir=images_dir,
        annotations_file=annotations_file,
        num_images=num_images,
        num_boxes=len(coco_annotations),
        boxes_per_class=per_class,
    )


# --- scenes -------------------------------------------------------------------------


def _render_scene(rng: np.random.Generator, size: int, classes: list[str], max_objects: int):
    canvas = Image.fromarray(_background(rng, size))
    _draw_distractors(rng, canvas)
    count = int(rng.integers(1, max_objects + 1)) if max_objects else 0
    placed: list[tuple[str, np.ndarray]] = []
    occupied = np.zeros((size, size), dtype=bool)
    for _ in range(count):
        label = classes[int(rng.integers(len(classes)))]
        for _ in range(_PLACEMENT_TRIES):
            mask = _shape_mask(rng, label, size)
            area = mask.sum()
            if area < 30:
                continue
            # Later objects hide earlier ones: refuse a placement that would hide too much
            # of an object already there, or leave too little of this one in the frame.
            if any((m & mask).sum() > (1 - _MIN_VISIBLE_FRACTION) * m.sum() for _, m in placed):
                continue
            break
        else:
            continue
        canvas = _paint_object(rng, canvas, mask)
        placed = [(name, m & ~mask) for name, m in placed]
        placed.append((label, mask))
        occupied |= mask
    boxes = []
    for label, visible in placed:
        ys, xs = np.nonzero(visible)
        if len(xs) < 20:
            continue
        boxes.append((label, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return _finish(rng, canvas), boxes


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = rng.integers(4)
    base = rng.uniform(40, 215, size=3)
    if kind == 0:  # value noise at a random scale
        cells = int(rng.integers(3, 12))
        grid = rng.uniform(-1, 1, size=(cells, cells, 3)).astype(np.float32)
        noise = np.stack(
            [np.asarray(Image.fromarray(grid[..., c]).resize((size, size), Image.BICUBIC)) for c in range(3)], -1
        )
        pixels = base + noise * rng.uniform(25, 70)
    elif kind == 1:  # a gradient in a random direction
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
        pixels = base + (ramp - 0.5) * rng.uniform(-1, 1, size=3) * 160
    elif kind == 2:  # stripes
        period = rng.uniform(6, 40)
        angle = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        wave = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * math.pi / period)[..., None]
        pixels = base + wave * rng.uniform(10, 45, size=3)
    else:  # a checker board, softened
        cell = int(rng.integers(8, 40))
        yy, xx = np.mgrid[0:size, 0:size]
        checker = (((xx // cell) + (yy // cell)) % 2)[..., None] * 2 - 1
        pixels = base + checker * rng.uniform(10, 40, size=3)
    pixels = pixels + rng.normal(0, rng.uniform(3, 12), size=(size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _draw_distractors(rng: np.random.Generator, canvas: Image.Image) -> None:
    draw = ImageDraw.Draw(canvas)
    size = canvas.size[0]
    for _ in range(int(rng.integers(0, 6))):
        points = [tuple(float(v) for v in rng.uniform(0, size, 2)) for _ in range(int(rng.integers(2, 5)))]
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        draw.line(points, fill=colour, width=int(rng.integers(1, 4)))


def _shape_mask(rng: np.random.Generator, label: str, size: int) -> np.ndarray:
    scale = size * rng.uniform(0.09, 0.42)
    cx, cy = rng.uniform(0.05, 0.95, 2) * size  # near the border the shape is cut
    aspect = rng.uniform(0.8, 1.25)
    rotation = rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (size, size), 0)
    _SHAPES[label](ImageDraw.Draw(mask), cx, cy, scale / 2, aspect, rotation)
    return np.asarray(mask) > 127


def _polygon(cx, cy, radii, angles, aspect, rotation):
    points = []
    for r, a in zip(radii, angles):
        x, y = r * math.cos(a) * aspect, r * math.sin(a)
        points.append(
            (cx + x * math.cos(rotation) - y * math.sin(rotation), cy + x * math.sin(rotation) + y * math.cos(rotation))
        )
    return points


def _circle(draw, cx, cy, r, aspect, rotation):
    draw.ellipse([cx - r * aspect, cy - r, cx + r * aspect, cy + r], fill=255)


def _square(draw, cx, cy, r, aspect, rotation):
    angles = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
    draw.polygon(_polygon(cx, cy, [r * 1.2] * 4, angles, aspect, rotation), fill=255)


def _triangle(draw, cx, cy, r, aspect, rotation):
    angles = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    draw.polygon(_polygon(cx, cy, [r * 1.2] * 3, angles, aspect, rotation), fill=255)


def _star(draw, cx, cy, r, aspect, rotation):
    angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
    radii = [r * 1.25 if k % 2 == 0 else r * 0.5 for k in range(10)]
    draw.polygon(_polygon(cx, cy, radii, angles, aspect, rotation), fill=255)


def _ring(draw, cx, cy, r, aspect, rotation):
    draw.ellipse([cx - r * aspect, cy - r, cx + r * aspect, cy + r], fill=255)
    inner = r * 0.55
    draw.ellipse([cx - inner * aspect, cy - inner, cx + inner * aspect, cy + inner], fill=0)


_SHAPES = {"circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "ring": _ring}


def _paint_object(rng: np.random.Generator, canvas: Image.Image, mask: np.ndarray) -> Image.Image:
    size = canvas.size[0]
    colour = rng.uniform(0, 255, 3)
    # Keep objects distinguishable from their surroundings: push the colour away from
    # the background's mean under the mask.
    under = np.asarray(canvas)[mask].mean(axis=0) if mask.any() else np.full(3, 128.0)
    if np.abs(colour - under).sum() < 150:
        colour = np.where(under > 127, under - rng.uniform(90, 140, 3), under + rng.uniform(90, 140, 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    shade = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None] * rng.uniform(10, 50)
    texture = colour + shade + rng.normal(0, rng.uniform(2, 10), size=(size, size, 3))
    fill = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8))
    alpha = Image.fromarray((mask * 255).astype(np.uint8))
    outline = alpha.filter(ImageFilter.MaxFilter(3))
    edge = Image.new("RGB", canvas.size, tuple(int(v) for v in np.clip(colour * 0.45, 0, 255)))
    canvas = Image.composite(edge, canvas, outline)
    return Image.composite(fill, canvas, alpha)


def _finish(rng: np.random.Generator, canvas: Image.Image) -> Image.Image:
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    pixels = np.asarray(canvas).astype(np.float32)
    contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(-30, 30)
    pixels = (pixels - 128) * contrast + 128 + brightness
    pixels += rng.normal(0, rng.uniform(1, 6), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _write_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
