"""Export speed against `cp -r` of the same images.

    .venv/bin/python bench/bench_export.py [--images 10000] [--size 320x240] [--rounds 5]

Ingests N JPEGs into a store (all in a temporary folder, nothing in the checkout),
labels them with synthetic boxes (0 to 4 per image, a fifth of them background), then
times, in turn for ``--rounds`` rounds (medians reported) and after an ``os.sync()``
each, so none pays for another's write-back:

- `cp -r` of the store's images folder into a fresh folder (the baseline);
- the export library call: ``plan_export`` (selection, splits, YOLO label text) and
  ``write_export`` (hard links, label files, dataset.yaml, export_info.yaml, the rename
  into place); goal: at most 0.3x the copy;
- the floor of this layout: one hard link and one small label file per image, nothing
  else (what no export of this layout can beat).

Reported apart, once: Ultralytics' check of every image and label, the health report
(table and plot), and the sample picture drawn from the written export.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from loadavg import load_reported
from PIL import Image

from cv_pipelines.config.loader import section_parameters
from cv_pipelines.exports.checks import check_with_ultralytics
from cv_pipelines.exports.health import health_figure, health_report_files, health_table, sample_figure
from cv_pipelines.exports.selection import plan_export
from cv_pipelines.exports.versions import read_export
from cv_pipelines.exports.writing import write_export
from cv_pipelines.images.ingestion import IMAGES_SCHEMA, IngestionJob, StoreLayout, ingest_images
from cv_pipelines.registries import parts as registry_parts
from cv_pipelines.registries.schemas import ANNOTATIONS_SCHEMA, EXCLUSIONS_SCHEMA, LABELS_SCHEMA

CLASSES = ["circle", "square", "triangle", "star", "ring"]
RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def make_images(folder: Path, count: int, size: tuple[int, int], bases: int = 64) -> None:
    """``count`` distinct JPEGs of ``size``: a few noisy pictures, each copy made unique
    by a JPEG comment segment (encoding 10,000 pictures would dominate the run)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    encoded = []
    for _ in range(bases):
        pixels = np.clip(ramp[None, :, None] * rng.uniform(0.3, 1, 3) + rng.normal(0, 25, (height, width, 3)), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=85)
        encoded.append(buffer.getvalue())
    for i in range(count):
        comment = f"bench image {i}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        data = encoded[i % bases]
        (folder / f"{i:05d}.jpg").write_bytes(data[:2] + segment + data[2:])  # after the SOI marker


def synthetic_registries(images, seed: int = 1):
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    boxes = []
    for image_id, width, height in zip(images["image_id"], images["width"], images["height"], strict=True):
        for _ in range(int(rng.integers(0, 5))):
            w, h = rng.uniform(0.03, 0.5) * width, rng.uniform(0.03, 0.5) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            boxes.append(
                {
                    "image_id": image_id,
                    "label_set": "bench",
                    "label": CLASSES[int(rng.integers(5))],
                    "x_min": x,
                    "y_min": y,
                    "x_max": x + w,
                    "y_max": y + h,
                    "source_task": "bench",
                    "batch_id": "bench",
                    "occluded": False,
                    "pulled_at": now,
                }
            )
    annotations = pa.Table.from_pylist(boxes, schema=ANNOTATIONS_SCHEMA).to_pandas()
    labels = pa.Table.from_pylist(
        [
            {
                "image_id": i,
                "label_set": "bench",
                "annotator": "bench",
                "active": True,
                "num_boxes": 0,
                "source_task": "bench",
                "batch_id": "bench",
                "labeled_at": now,
            }
            for i in images["image_id"]
        ],
        schema=LABELS_SCHEMA,
    ).to_pandas()
    return annotations, labels, EXCLUSIONS_SCHEMA.empty_table().to_pandas()


def timed(action) -> tuple[float, object]:
    os.sync()  # start from a clean page cache: no write-back of the previous step to pay for
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", default="320x240", help="JPEG size; 320x240 gives ~33 KB files, 480x360 ~70 KB")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        tmp = Path(tmp)
        root = tmp / "project"
        from cv_pipelines.config.offline import apply_offline_defaults

        apply_offline_defaults(root)  # Ultralytics' settings inside the throwaway project
        started = time.perf_counter()
        make_images(root / "data/incoming", args.images, size)
        layout = StoreLayout(root, Path("data/store/images"), Path("data/registry"), Path("data/quarantine"))
        ingest_images(IngestionJob(layout, Path("data/incoming"), section_parameters("ingestion", workers=2, show_progress=False)))
        images = registry_parts.read_registry(root / "data/registry/images", schema=IMAGES_SCHEMA)
        annotations, labels, exclusions = synthetic_registries(images)
        print(f"Made and ingested {len(images):,} JPEGs in {time.perf_counter() - started:.1f} s", flush=True)

        def export(exports_dir: Path):
            plan = plan_export(
                images=images,
                annotations=annotations,
                labels=labels,
                exclusions=exclusions,
                label_set="bench",
                classes=CLASSES,
                split_seed=0,
                split_ratios=RATIOS,
            )
            return plan, write_export(plan, project_root=root, exports_dir=exports_dir)

        def floor(floor_dir: Path) -> None:
            # The floor of this layout: one hard link and one small label file per image,
            # in two folders, with no selection, splitting or formatting at all.
            for kind in ("images", "labels"):
                (floor_dir / kind).mkdir(parents=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            for image_id, path in zip(images["image_id"].tolist(), images["path"].tolist(), strict=True):
                os.link(f"{root}/{path}", f"{floor_dir}/images/{image_id}.jpg")
                handle = os.open(f"{floor_dir}/labels/{image_id}.txt", flags, 0o644)
                os.write(handle, b"0 0.500000 0.500000 0.100000 0.100000\n")
                os.close(handle)

        copies, exports, floors = [], [], []
        for round_number in range(args.rounds):
            copy_dir, exports_dir, floor_dir = (tmp / f"{kind}{round_number}" for kind in ("copy", "exports", "floor"))
            copy_s, _ = timed(
                lambda copy_dir=copy_dir: subprocess.run(
                    ["cp", "-r", str(root / "data/store/images"), str(copy_dir)], check=True
                )
            )
            export_s, (plan, result) = timed(lambda exports_dir=exports_dir: export(exports_dir))
            floor_s, _ = timed(lambda floor_dir=floor_dir: floor(floor_dir))
            copies.append(copy_s)
            exports.append(export_s)
            floors.append(floor_s)
            # Nothing is removed before the end: deleting (and discarding) 10,000 files
            # would slow down whichever step of the next round runs first.

        check_s, checked = timed(
            lambda: check_with_ultralytics(
                result.path, classes=CLASSES, expected_shapes=plan.expected_shapes(), project_root=root
            )
        )
        health_s, _ = timed(lambda: health_report_files(health_table(plan), health_figure(plan)))
        sample_s, _ = timed(lambda: sample_figure(read_export(result.path, result.version)).savefig(tmp / "sample.png"))

        copy_s, export_s, floor_s = (statistics.median(values) for values in (copies, exports, floors))
        mean_kb = images["size_bytes"].mean() / 1024
        print(
            f"\nExport of {len(images):,} labeled images ({mean_kb:.0f} KB each, {len(plan.boxes):,} boxes, "
            f"{sum(1 for text in plan.labels.values() if not text):,} background), median of {args.rounds} rounds:"
        )
        print(
            f"  cp -r of the same images (baseline)   : {copy_s:6.2f} s   rounds {', '.join(f'{s:.2f}' for s in copies)}"
        )
        print(
            f"  export (plan_export + write_export)   : {export_s:6.2f} s   rounds {', '.join(f'{s:.2f}' for s in exports)}"
        )
        print(
            f"  ratio export / cp -r                  : {export_s / copy_s:6.2f}x  (goal <= 0.3x; per round "
            f"{', '.join(f'{e / c:.2f}' for e, c in zip(exports, copies, strict=True))})"
        )
        print(
            f"  floor: hard link + label file / image : {floor_s:6.2f} s   rounds {', '.join(f'{s:.2f}' for s in floors)}"
            f"; ratio {floor_s / copy_s:.2f}x"
        )
        print(f"  Ultralytics check of {checked['images']:,} images       : {check_s:6.2f} s   (apart)")
        print(f"  health report (table + PNG)           : {health_s:6.2f} s   (apart)")
        print(f"  sample picture (8 images, PNG)        : {sample_s:6.2f} s   (apart)")


if __name__ == "__main__":
    with load_reported():
        main()
