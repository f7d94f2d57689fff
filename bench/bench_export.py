"""Export speed against `cp -r` of the same images.

    .venv/bin/python bench/bench_export.py [--images 10000]

Ingests N small JPEGs into a store, labels them with synthetic boxes, then times, in the
same run:

- `cp -r` of the store's images into a fresh folder (the baseline);
- the export itself: selection, split, YOLO labels, hard links, dataset.yaml,
  export_info.yaml (goal: at most 0.3x the copy);
- Ultralytics' own check of every image and label of the export, reported apart.

Everything happens in a temporary folder; nothing is written into the checkout.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from cv_pipelines import registry_parts
from cv_pipelines.ingest_images import IMAGES_SCHEMA, IngestionSettings, ingest_images
from cv_pipelines.registry_schemas import ANNOTATIONS_SCHEMA, EXCLUSIONS_SCHEMA, LABELS_SCHEMA
from cv_pipelines.yolo_export import check_with_ultralytics, plan_export, write_export

CLASSES = ["circle", "square", "triangle", "star", "ring"]


def make_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    width, height = size
    base = np.linspace(0, 255, width, dtype=np.float32)
    for i in range(count):
        pixels = np.clip(base[None, :, None] * rng.uniform(0.3, 1, 3) + rng.normal(0, 25, (height, width, 3)), 0, 255)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=85)
        (folder / f"{i:05d}.jpg").write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument(
        "--size", default="480x360",
        help="image size; 480x360 JPEGs are ~100 KB, the drop of the ingestion benchmark (320x240: ~50 KB)",
    )
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        root = Path(tmp) / "project"
        from cv_pipelines.offline import apply_offline_defaults

        apply_offline_defaults(root)  # Ultralytics' settings inside the throwaway project
        print(f"Making and ingesting {args.images} JPEGs ...", flush=True)
        make_images(root / "data/incoming", args.images, size)
        ingest_images(IngestionSettings(
            project_root=root, source_dir=Path("data/incoming"), store_dir=Path("data/store/images"),
            registry_dir=Path("data/registry"), quarantine_dir=Path("data/quarantine"), show_progress=False,
        ))
        images = registry_parts.read_registry(root / "data/registry/images", schema=IMAGES_SCHEMA)
        rng = np.random.default_rng(1)
        now = datetime.now(timezone.utc)
        boxes = []
        for image_id in images["image_id"]:
            for _ in range(int(rng.integers(0, 5))):
                x, y = rng.uniform(0, 200), rng.uniform(0, 150)
                boxes.append({"image_id": image_id, "label_set": "bench", "label": CLASSES[int(rng.integers(5))],
                              "x_min": x, "y_min": y, "x_max": x + rng.uniform(10, 110), "y_max": y + rng.uniform(10, 80),
                              "source_task": "bench", "batch_id": "bench", "occluded": False, "pulled_at": now})
        annotations = pa.Table.from_pylist(boxes, schema=ANNOTATIONS_SCHEMA).to_pandas()
        labels = pa.Table.from_pylist(
            [{"image_id": i, "label_set": "bench", "annotator": "bench", "active": True, "num_boxes": 0,
              "source_task": "bench", "batch_id": "bench", "labeled_at": now} for i in images["image_id"]],
            schema=LABELS_SCHEMA,
        ).to_pandas()
        exclusions = EXCLUSIONS_SCHEMA.empty_table().to_pandas()

        started = time.perf_counter()
        subprocess.run(["cp", "-r", str(root / "data/store/images"), str(Path(tmp) / "copy")], check=True)
        copy_s = time.perf_counter() - started

        # The floor of this design: one hard link and one small label file per image, in
        # the same folders, with no selection, splitting or formatting at all.
        floor_dir = Path(tmp) / "floor"
        for kind in ("images", "labels"):
            (floor_dir / kind).mkdir(parents=True)
        started = time.perf_counter()
        for image_id, path in zip(images["image_id"], images["path"]):
            os.link(root / path, floor_dir / "images" / f"{image_id}.jpg")
            handle = os.open(floor_dir / "labels" / f"{image_id}.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(handle, b"0 0.5 0.5 0.1 0.1\n")
            os.close(handle)
        floor_s = time.perf_counter() - started

        started = time.perf_counter()
        plan = plan_export(images=images, annotations=annotations, labels=labels, exclusions=exclusions,
                           label_set="bench", classes=CLASSES, split_seed=0,
                           split_ratios={"train": 0.8, "val": 0.1, "test": 0.1})
        result = write_export(plan, project_root=root, exports_dir=root / "data/exports")
        export_s = time.perf_counter() - started

        started = time.perf_counter()
        checked = check_with_ultralytics(result.path, len(CLASSES))
        check_s = time.perf_counter() - started

        mean_kb = images["size_bytes"].mean() / 1024
        print(f"\nExport of {args.images:,} labeled images ({mean_kb:.0f} KB each, {len(boxes):,} boxes), same run:")
        print(f"  cp -r of the same images (baseline)      : {copy_s:6.2f} s")
        print(f"  floor: hard link + label file per image    : {floor_s:6.2f} s   ratio {floor_s / copy_s:.2f}x")
        print(f"  export (select, split, label, hard-link)  : {export_s:6.2f} s   ratio {export_s / copy_s:.2f}x (goal <= 0.3x)")
        print(f"  Ultralytics check of all {checked['checked_images']:,} images : {check_s:6.2f} s   (reported apart)")


if __name__ == "__main__":
    main()
