"""A synthetic, learnable object-detection data set the project makes itself.

Five classes of shapes (circle, square, triangle, star, ring) with their own fills
(flat, gradients, stripes, mottled noise) and outlines, at sizes from 10 % to 45 % of
the image side, with aspect jitter; round shapes take any orientation, the others
stand roughly upright (tilted up to 20 degrees), as things do in photographs. Some are
partly hidden by one another, by distractor blobs and strokes that are not objects,
or by the image border; some cast a soft shadow. Backgrounds are random mixes of value
noise, gradients, stripes, checkers and grain with colour jitter; every image then
gets its own lighting, colour cast, contrast, blur and sensor noise, and is saved as a
JPEG.

Every image depends only on ``(seed, index)``, so the same arguments give byte-identical
files. A box is the tight bound of its object's pixels as drawn, clipped to the image
(an object partly hidden by a later one keeps its whole box, as annotators draw it,
and is flagged ``occluded`` in the CVAT-style ``attributes``); no object is more than
half hidden.

The layout is the one CVAT's "COCO 1.0" export uses, so the project's COCO import
reads it like any labeled data set::

    <output_dir>/images/demo_00000.jpg ...
    <output_dir>/annotations/instances_default.json

Only numpy and Pillow are needed; 300 images of 256 px take about 5 s on two cores.
Learnable in CPU minutes: YOLOv8n from scratch, 300 images (240 train), imgsz 160,
batch 16, 25 epochs (AdamW lr0 0.003, no warmup, no mosaic) reached mAP50 0.5 on the
60 held-out images in under 3 minutes on two cores.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cv_pipelines.files.atomic import write_bytes_atomically

DEMO_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")

#: Object extent (longest side of its shape) as a fraction of the image side.
_MIN_SCALE, _MAX_SCALE = 0.10, 0.45
#: An object keeps at least this fraction of its in-frame pixels unhidden by later ones.
_MIN_VISIBLE = 0.5
#: ... and has at least this fraction of its whole shape inside the frame.
_MIN_IN_FRAME = 0.45
_PLACEMENT_TRIES = 15
#: Shapes are drawn this many times larger and then reduced: soft, anti-aliased edges.
_SUPERSAMPLE = 2
_JPEG_QUALITY = 90
_IMAGE_NAME = re.compile(r"demo_\d{5,}\.jpg")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class DemoDatasetSummary:
    """Where a generated data set lies (its images folder and COCO file) and how many images and boxes it has."""

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
    """Write ``num_images`` JPEGs and a COCO instances file under ``output_dir``.

    Images are ``image_size`` pixels square; each holds 1 to ``max_objects`` objects of
    ``classes`` (a subset of :data:`DEMO_CLASSES`, in label order), except a share of
    about ``empty_fraction`` background images that hold none (spread evenly over the
    indices, so any run of images has its share). Image ``i`` depends only on
    ``(seed, i)``: the same arguments give byte-identical files, and a larger
    ``num_images`` only appends images.

    Every file is written under a temporary name and renamed into place. The COCO file
    is removed first and written last, so when it exists it describes the images next
    to it; ``demo_*.jpg`` files of an earlier, larger run are removed.

    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> summary = generate_demo_dataset(out, num_images=8, image_size=128, seed=0)
    >>> summary.num_images, summary.annotations_file.name
    (8, 'instances_default.json')
    >>> sorted(summary.boxes_per_class) == sorted(DEMO_CLASSES)
    True
    """
    classes = list(classes)
    _check_arguments(classes, num_images, image_size, max_objects, empty_fraction)
    root = Path(output_dir)
    images_dir = root / "images"
    annotations_file = root / "annotations" / "instances_default.json"
    images_dir.mkdir(parents=True, exist_ok=True)
    annotations_file.parent.mkdir(parents=True, exist_ok=True)
    annotations_file.unlink(missing_ok=True)

    category_ids = {name: i + 1 for i, name in enumerate(classes)}
    per_class = dict.fromkeys(classes, 0)
    coco_images: list[dict] = []
    coco_annotations: list[dict] = []
    names = set()
    # Background images sit at a low-discrepancy sequence of indices: about
    # empty_fraction of any run of images, and still a function of (seed, index) only.
    phase = np.random.default_rng(_entropy(seed, -1)).random()
    for index in range(num_images):
        empty = (phase + index * _GOLDEN) % 1.0 < empty_fraction
        rng = np.random.default_rng(_entropy(seed, index))
        image, objects = _render_image(rng, image_size, classes, 0 if empty else max_objects)
        file_name = f"demo_{index:05d}.jpg"
        names.add(file_name)
        write_bytes_atomically(images_dir / file_name, _jpeg_bytes(image))
        coco_images.append({"id": index + 1, "file_name": file_name, "width": image_size, "height": image_size})
        coco_annotations += _coco_boxes(objects, index + 1, category_ids, first_id=len(coco_annotations) + 1)
        for label, _, _ in objects:
            per_class[label] += 1
    for stale in images_dir.iterdir():
        if _IMAGE_NAME.fullmatch(stale.name) and stale.name not in names:
            stale.unlink()

    coco = _coco_document(seed, category_ids, coco_images, coco_annotations)
    write_bytes_atomically(annotations_file, json.dumps(coco, indent=1).encode())
    return DemoDatasetSummary(
        root=root,
        images_dir=images_dir,
        annotations_file=annotations_file,
        num_images=num_images,
        num_boxes=len(coco_annotations),
        boxes_per_class=per_class,
    )


def _check_arguments(
    classes: list[str], num_images: int, image_size: int, max_objects: int, empty_fraction: float
) -> None:
    """``ValueError`` naming the argument that cannot make a data set."""
    unknown = [name for name in classes if name not in _SHAPES]
    if unknown:
        raise ValueError(f"no demo shape for class(es) {unknown}; available: {', '.join(DEMO_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct, got {classes}")
    if not classes and max_objects > 0:
        raise ValueError("classes is empty but max_objects > 0")
    if num_images < 0 or max_objects < 0:
        raise ValueError("num_images and max_objects must be >= 0")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}")


def _coco_boxes(objects, image_id: int, category_ids: dict[str, int], *, first_id: int) -> list[dict]:
    """The COCO annotations of one image's objects, numbered from ``first_id``."""
    boxes = []
    for offset, (label, (x1, y1, x2, y2), occluded) in enumerate(objects):
        w, h = float(x2 - x1), float(y2 - y1)
        boxes.append(
            {
                "id": first_id + offset,
                "image_id": image_id,
                "category_id": category_ids[label],
                "bbox": [float(x1), float(y1), w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": [],
                "attributes": {"occluded": occluded, "rotation": 0.0},
            }
        )
    return boxes


def _coco_document(seed: int, category_ids: dict[str, int], images: list[dict], annotations: list[dict]) -> dict:
    """The COCO instances document, as CVAT's "COCO 1.0" export lays it out."""
    return {
        "licenses": [],
        "info": {
            "description": f"cv_pipelines synthetic demo data (seed {seed})",
            "contributor": "cv_pipelines.demo_data",
            "version": "1.0",
        },
        "categories": [{"id": cid, "name": name, "supercategory": ""} for name, cid in category_ids.items()],
        "images": images,
        "annotations": annotations,
    }


def _entropy(seed: int, index: int) -> list[int]:
    # SeedSequence takes non-negative integers only; keep the sign apart.
    return [abs(int(seed)), int(seed < 0), index + 1]


# --- one image --------------------------------------------------------------------------


@dataclass
class _Sprite:
    """A shape's coverage (0..1) in its own box ``[y0:y0+h, x0:x0+w]`` of the image."""

    alpha: np.ndarray
    y0: int
    x0: int
    whole_area: float  # coverage of the whole shape, inside the frame or not

    @property
    def region(self) -> tuple[slice, slice]:
        h, w = self.alpha.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


def _render_image(rng: np.random.Generator, size: int, classes: list[str], max_objects: int):
    canvas = _background(rng, size)
    for _ in range(int(rng.integers(0, 4))):  # clutter under the objects
        _paint_distractor(rng, canvas, _distractor_sprite(rng, size))

    owner = np.full((size, size), -1, dtype=np.int16)  # topmost object of each pixel
    in_frame: list[int] = []  # pixels of each object as drawn, before anything hid them
    objects: list[tuple[str, tuple[int, int, int, int]]] = []
    count = int(rng.integers(1, max_objects + 1)) if max_objects else 0
    for _ in range(count):
        label = classes[int(rng.integers(len(classes)))]
        for _ in range(_PLACEMENT_TRIES):
            sprite = _shape_sprite(rng, label, size)
            if sprite is None or sprite.alpha.sum() < _MIN_IN_FRAME * sprite.whole_area:
                continue
            mask = sprite.alpha >= 0.5
            if mask.sum() >= 12 and _hides_little(owner, in_frame, sprite.region, mask):
                break
        else:
            continue
        if rng.random() < 0.35:
            _paint_shadow(rng, canvas, sprite)
        _paint_object(rng, canvas, sprite, label)
        owner[sprite.region][mask] = len(objects)
        in_frame.append(int(mask.sum()))
        ys, xs = np.nonzero(mask)
        y0, x0 = sprite.y0, sprite.x0
        objects.append(
            (label, (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1))
        )

    for _ in range(int(rng.random() < 0.5)):  # things in front of the objects
        sprite = _distractor_sprite(rng, size)
        mask = sprite.alpha >= 0.5
        if _hides_little(owner, in_frame, sprite.region, mask):
            _paint_distractor(rng, canvas, sprite)
            owner[sprite.region][mask] = -2

    visible = np.bincount(owner.ravel() + 2, minlength=len(objects) + 2)[2:]
    annotated = [(label, box, bool(visible[k] < 0.97 * in_frame[k])) for k, (label, box) in enumerate(objects)]
    return _finish(rng, canvas), annotated


def _hides_little(owner: np.ndarray, in_frame: list[int], region, mask: np.ndarray) -> bool:
    """Whether painting ``mask`` at ``region`` leaves every object enough of its pixels."""
    if not in_frame:
        return True
    visible = np.bincount(owner.ravel() + 2, minlength=len(in_frame) + 2)[2:]
    hidden = np.bincount(owner[region][mask] + 2, minlength=len(in_frame) + 2)[2:]
    return bool(np.all(visible - hidden >= _MIN_VISIBLE * np.asarray(in_frame)))


# --- shapes -----------------------------------------------------------------------------


def _unit_ring(n: int) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _circle(rng):
    return [_unit_ring(48)]


def _square(rng):
    return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.72]


def _triangle(rng):  # apex up, corners jittered
    angles = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.12, 0.12, 3)
    radii = rng.uniform(0.9, 1.1, 3)
    return [np.stack([radii * np.cos(angles), radii * np.sin(angles) + 0.2], axis=1)]


def _star(rng):  # five points, one up
    angles = -math.pi / 2 + np.arange(10) * math.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.35, 0.45))
    return [np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)]


def _ring(rng):
    return [_unit_ring(48), _unit_ring(48) * rng.uniform(0.45, 0.62)]


#: Per class: the outline polygons in unit coordinates (the first filled, the next cut
#: out), the largest aspect ratio the shape is stretched to, and the largest tilt in
#: radians. Like things in photographs, squares, triangles and stars mostly stand
#: upright; round things take any orientation.
_SHAPES = {
    "circle": (_circle, 1.12, math.pi),
    "square": (_square, 1.33, 0.35),
    "triangle": (_triangle, 1.15, 0.35),
    "star": (_star, 1.12, 0.35),
    "ring": (_ring, 1.12, math.pi),
}


def _shape_sprite(rng: np.random.Generator, label: str, size: int) -> _Sprite | None:
    outline, max_aspect, max_tilt = _SHAPES[label]
    extent = size * math.exp(rng.uniform(math.log(_MIN_SCALE), math.log(_MAX_SCALE)))
    stretch = math.exp(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))
    return _sprite_from_polygons(
        outline(rng),
        centre=rng.uniform(0, size, 2),
        radius=extent / 2,
        scale=(math.sqrt(stretch), 1 / math.sqrt(stretch)),
        rotation=rng.uniform(-max_tilt, max_tilt),
        size=size,
    )


def _distractor_sprite(rng: np.random.Generator, size: int) -> _Sprite:
    """A lumpy blob or a bent stroke: things that are in the picture but not objects."""
    centre = rng.uniform(0, size, 2)
    rotation = rng.uniform(0, 2 * math.pi)
    if rng.random() < 0.6:
        angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        radii = np.ones_like(angles)
        for k in (2, 3, 4, 5):
            radii += rng.uniform(0.08, 0.2) * np.cos(k * angles + rng.uniform(0, 2 * math.pi))
        outline = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        stretch = rng.uniform(1.3, 3.0)
        sprite = _sprite_from_polygons(
            [outline],
            centre=centre,
            radius=size * rng.uniform(0.04, 0.16),
            scale=(stretch, 1.0),
            rotation=rotation,
            size=size,
        )
    else:
        sprite = _stroke_sprite(rng, centre, size)
    if sprite is None:  # wholly outside the frame: an empty sprite paints nothing
        return _Sprite(np.zeros((1, 1), np.float32), 0, 0, 0.0)
    return sprite


def _stroke_sprite(rng: np.random.Generator, centre: np.ndarray, size: int) -> _Sprite | None:
    length = size * rng.uniform(0.2, 0.7)
    heading = rng.uniform(0, 2 * math.pi)
    vertices = [centre]
    for _ in range(int(rng.integers(1, 4))):
        heading += rng.uniform(-1.2, 1.2)
        step = length / 3
        vertices.append(vertices[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
    points = np.array(vertices)
    width = size * rng.uniform(0.01, 0.035)
    lo = np.floor(points.min(axis=0) - width).astype(int)
    hi = np.ceil(points.max(axis=0) + width).astype(int) + 1
    s = _SUPERSAMPLE
    layer = Image.new("L", tuple((hi - lo) * s), 0)
    ImageDraw.Draw(layer).line(
        [tuple(float(v) for v in (p - lo) * s) for p in points], fill=255, width=max(1, round(width * s)), joint="curve"
    )
    return _clip_sprite(layer, lo, size)


def _sprite_from_polygons(polygons, *, centre, radius, scale, rotation, size) -> _Sprite | None:
    cos, sin = math.cos(rotation), math.sin(rotation)
    transform = np.array([[cos, -sin], [sin, cos]]) @ np.diag(scale) * radius
    placed = [p @ transform.T + centre for p in polygons]
    lo = np.floor(placed[0].min(axis=0)).astype(int) - 1
    hi = np.ceil(placed[0].max(axis=0)).astype(int) + 2
    s = _SUPERSAMPLE
    layer = Image.new("L", tuple((hi - lo) * s), 0)
    draw = ImageDraw.Draw(layer)
    for k, polygon in enumerate(placed):
        draw.polygon([tuple(float(v) for v in (p - lo) * s) for p in polygon], fill=0 if k else 255)
    return _clip_sprite(layer, lo, size)


def _clip_sprite(layer: Image.Image, lo: np.ndarray, size: int) -> _Sprite | None:
    """Reduce a supersampled layer to coverage and cut it to the image."""
    alpha = np.asarray(layer.reduce(_SUPERSAMPLE), dtype=np.float32) / 255.0
    whole = float(alpha.sum())
    x0, y0 = int(lo[0]), int(lo[1])
    h, w = alpha.shape
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, size), min(y0 + h, size)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        return None
    return _Sprite(alpha[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], cy0, cx0, whole)


# --- paint ------------------------------------------------------------------------------


def _random_colour(rng: np.random.Generator, saturation=(0.25, 1.0), value=(0.2, 1.0)) -> np.ndarray:
    """An RGB colour (0..255) from a random hue, saturation and value."""
    h = rng.uniform(0, 6)
    s, v = rng.uniform(*saturation), rng.uniform(*value)
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return ((np.array(rgb) + (v - c)) * 255.0).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """Smooth noise in about [-1, 1] with ``cells`` features across the longer side."""
    h, w = shape
    gh = max(2, round(cells * h / max(h, w)) + 1)
    gw = max(2, round(cells * w / max(h, w)) + 1)
    grid = Image.fromarray(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC))


def _pattern(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """A pattern in [0, 1]: value noise, gradient, stripes, checker or grain."""
    h, w = shape
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    if kind == "noise":
        cells = rng.uniform(2, 8)
        t = _value_noise(rng, shape, cells) + 0.5 * _value_noise(rng, shape, cells * 2.5)
        return np.clip(0.5 + 0.4 * t, 0, 1)
    if kind == "gradient":
        if rng.random() < 0.3:  # radial
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            t = np.hypot(yy - cy, xx - cx) / max(h, w)
        else:
            u = cos * xx + sin * yy
            t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        return np.clip(t, 0, 1)
    if kind == "stripes":
        period = max(h, w) * rng.uniform(0.03, 0.2)
        sharp = rng.uniform(1, 6)
        return 0.5 + 0.5 * np.tanh(sharp * np.sin((cos * xx + sin * yy) * (2 * math.pi / period)))
    if kind == "checker":
        period = max(h, w) * rng.uniform(0.12, 0.4)
        sharp = rng.uniform(1, 4)
        k = math.pi / period
        wave = np.sin((cos * xx + sin * yy) * k) * np.sin((cos * yy - sin * xx) * k)
        return 0.5 + 0.5 * np.tanh(sharp * wave)
    # grain: fine blurred noise
    return np.clip(0.5 + 0.45 * _value_noise(rng, shape, max(h, w) * rng.uniform(0.12, 0.3)), 0, 1)


_BACKGROUND_KINDS = ("noise", "gradient", "stripes", "checker", "grain")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A mix of two or three patterns between two colours, with shading and grain."""
    shape = (size, size)
    first = _BACKGROUND_KINDS[int(rng.integers(len(_BACKGROUND_KINDS)))]
    second = _BACKGROUND_KINDS[int(rng.integers(len(_BACKGROUND_KINDS)))]
    colour_a = _random_colour(rng, saturation=(0.0, 0.7), value=(0.15, 0.95))
    colour_b = np.clip(colour_a + rng.normal(0, 40, 3), 0, 255).astype(np.float32)
    t = _pattern(rng, shape, first)[..., None]
    pixels = colour_a + (colour_b - colour_a) * t
    pixels *= 1 + np.float32(rng.uniform(0.1, 0.35)) * (_pattern(rng, shape, second)[..., None] - 0.5)
    if rng.random() < 0.5:
        third = _BACKGROUND_KINDS[int(rng.integers(len(_BACKGROUND_KINDS)))]
        tint = rng.normal(0, 25, 3).astype(np.float32)
        pixels += tint * (_pattern(rng, shape, third)[..., None] - 0.5)
    pixels += np.float32(rng.uniform(2, 8)) * rng.standard_normal((size, size, 1), dtype=np.float32)
    return np.clip(pixels, 0, 255, out=pixels)


def _fill(rng: np.random.Generator, shape: tuple[int, int], colour: np.ndarray) -> np.ndarray:
    """The texture of an object's fill: flat, gradient, stripes or mottled, around ``colour``."""
    kind = ("flat", "gradient", "gradient", "stripes", "noise")[int(rng.integers(5))]
    if kind == "flat":
        pixels = np.broadcast_to(colour, (*shape, 3)).astype(np.float32)
    else:
        other = np.clip(colour + rng.normal(0, 45, 3), 0, 255).astype(np.float32)
        t = _pattern(rng, shape, kind)[..., None]
        pixels = colour + (other - colour) * t
    return pixels + np.float32(rng.uniform(1, 6)) * rng.standard_normal((*shape, 1), dtype=np.float32)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A colour that stands out from ``under`` (the mean colour it will cover)."""
    scored = []
    for _ in range(8):
        colour = _random_colour(rng)
        score = abs(float(_luma(colour) - _luma(under))) + 0.25 * float(np.abs(colour - under).sum())
        if score > 140:
            return colour
        scored.append((score, colour))
    return max(scored, key=lambda pair: pair[0])[1]  # the first of the best, as drawn


def _paint(canvas: np.ndarray, sprite: _Sprite, pixels: np.ndarray, alpha: np.ndarray) -> None:
    region = canvas[sprite.region]
    a = alpha[..., None]
    region *= 1 - a
    region += pixels * a


def _paint_object(rng: np.random.Generator, canvas: np.ndarray, sprite: _Sprite, label: str) -> None:
    mask = sprite.alpha >= 0.5
    under = canvas[sprite.region][mask].mean(axis=0)
    colour = _contrasting_colour(rng, under)
    pixels = _fill(rng, sprite.alpha.shape, colour)
    if rng.random() < 0.8:  # an outline, darker or lighter than the fill
        width = 1 + int(rng.integers(0, 2 if min(sprite.alpha.shape) < 40 else 3))
        inner = Image.fromarray((sprite.alpha * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(2 * width + 1))
        rim = (1 - np.asarray(inner, dtype=np.float32) / 255.0)[..., None]
        edge = colour * rng.uniform(0.2, 0.5) if _luma(colour) > 90 else np.clip(colour + 120, 0, 255)
        pixels = pixels * (1 - rim) + edge * rim
    _paint(canvas, sprite, pixels, sprite.alpha)


def _paint_shadow(rng: np.random.Generator, canvas: np.ndarray, sprite: _Sprite) -> None:
    """Darken the surroundings below and beside the object, as a soft cast shadow."""
    size = canvas.shape[0]
    dx, dy = (rng.uniform(1, 4, 2) * np.sign(rng.uniform(-1, 1, 2))).round().astype(int)
    h, w = sprite.alpha.shape
    pad = 4
    layer = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
    layer[pad + dy : pad + dy + h, pad + dx : pad + dx + w] = sprite.alpha
    soft = Image.fromarray((layer * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(1, 2.5)))
    shade = np.asarray(soft, np.float32) / 255.0 * rng.uniform(0.25, 0.5)
    y0, x0 = sprite.y0 - pad, sprite.x0 - pad
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + layer.shape[0], size), min(x0 + layer.shape[1], size)
    canvas[cy0:cy1, cx0:cx1] *= 1 - shade[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None]


def _paint_distractor(rng: np.random.Generator, canvas: np.ndarray, sprite: _Sprite) -> None:
    if not sprite.alpha.any():
        return
    colour = _random_colour(rng, saturation=(0.0, 0.8))
    pixels = _fill(rng, sprite.alpha.shape, colour)
    _paint(canvas, sprite, pixels, sprite.alpha * rng.uniform(0.6, 1.0))


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> Image.Image:
    """Lighting, colour cast, contrast, blur and sensor noise of the whole picture."""
    size = canvas.shape[0]
    light = 1.0 + np.float32(rng.uniform(-0.5, 0.5)) * (_pattern(rng, (size, size), "gradient") - 0.5)
    cast = rng.uniform(0.88, 1.12, 3)
    contrast, brightness = rng.uniform(0.7, 1.2), rng.uniform(-30, 30)
    # ((canvas * light * cast) - 128) * contrast + 128 + brightness, in two passes
    pixels = canvas * light[..., None]
    pixels *= (cast * contrast).astype(np.float32)
    pixels += np.float32(128 * (1 - contrast) + brightness)
    image = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.1))))
    noisy = np.asarray(image, np.float32)
    noisy += np.float32(rng.uniform(1, 5)) * rng.standard_normal((size, size, 3), dtype=np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255, out=noisy).astype(np.uint8))


# --- files ------------------------------------------------------------------------------


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()
