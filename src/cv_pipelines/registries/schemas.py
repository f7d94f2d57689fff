"""Column schemas of the registries: what ingestion, imports and labeling write, and export reads.

Boxes are in pixels of the image as a model sees it: after EXIF orientation, the same
frame of reference as the ``width``/``height`` columns of the images registry.
"""

from __future__ import annotations

import pyarrow as pa

#: One row per stored image; ``path`` is relative to the project root.
IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),  # relative to the project root
        ("source_id", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("width", pa.int32()),  # after EXIF orientation
        ("height", pa.int32()),
        ("format", pa.string()),
        ("size_bytes", pa.int64()),
        ("original_name", pa.string()),
        ("original_path", pa.string()),  # relative to the folder it was ingested from
        ("exif_orientation", pa.int8()),
        ("ingest_run_id", pa.string()),
    ]
)

#: One row per input that ingestion set aside, with the reason and where it is kept.
REJECTIONS_SCHEMA = pa.schema(
    [
        ("content_sha256", pa.string()),  # empty when the file could not be read
        ("original_name", pa.string()),
        ("original_path", pa.string()),
        ("quarantine_path", pa.string()),  # relative to the project root
        ("reason", pa.string()),
        ("size_bytes", pa.int64()),
        ("source_id", pa.string()),
        ("rejected_at", pa.timestamp("us", tz="UTC")),
        ("ingest_run_id", pa.string()),
    ]
)

#: One row per box. Re-pulling a batch replaces that batch's part, never appends to it.
ANNOTATIONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("label_set", pa.string()),
        ("label", pa.string()),
        ("x_min", pa.float64()),
        ("y_min", pa.float64()),
        ("x_max", pa.float64()),
        ("y_max", pa.float64()),
        ("source_task", pa.string()),  # "cvat:<task id>" or "coco:<import name>"
        ("batch_id", pa.string()),
        ("occluded", pa.bool_()),
        ("pulled_at", pa.timestamp("us", tz="UTC")),
    ]
)

#: One row per labeled image and label set: an image labeled with no boxes has a row
#: here and none in annotations (a background image). ``active`` False retires a label.
LABELS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("label_set", pa.string()),
        ("annotator", pa.string()),
        ("active", pa.bool_()),
        ("num_boxes", pa.int32()),
        ("source_task", pa.string()),
        ("batch_id", pa.string()),
        ("labeled_at", pa.timestamp("us", tz="UTC")),
    ]
)

#: Images never to be selected or exported again (for one label set, or all if null).
EXCLUSIONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("label_set", pa.string()),  # null: excluded from every label set
        ("reason", pa.string()),
        ("source", pa.string()),  # "cvat_tag:<task id>" or "csv:<file name>"
        ("excluded_at", pa.timestamp("us", tz="UTC")),
    ]
)

BATCHES_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("label_set", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("num_images", pa.int32()),
        ("cvat_task_id", pa.int64()),
        ("status", pa.string()),  # open | pulled | failed
        ("path", pa.string()),  # batch folder, relative to the project root
    ]
)

#: The classes of a label set in class-id order, one part per label set holding its whole
#: list: what a COCO import added to a set (``import_coco.unknown_categories: append``) or
#: made a set of (``new_label_set``). ``labeling.labels`` declares the configured set's
#: classes; ``annotations.label_sets`` says how the two combine.
LABEL_SETS_SCHEMA = pa.schema(
    [
        ("label_set", pa.string()),
        ("class_id", pa.int32()),
        ("label", pa.string()),
        ("added_by", pa.string()),  # "labeling.labels" or "coco:<import name>"
        ("added_at", pa.timestamp("us", tz="UTC")),
    ]
)

#: Each registry's schema by its folder name (``data/registry/<name>``).
SCHEMAS = {
    "images": IMAGES_SCHEMA,
    "rejections": REJECTIONS_SCHEMA,
    "annotations": ANNOTATIONS_SCHEMA,
    "labels": LABELS_SCHEMA,
    "exclusions": EXCLUSIONS_SCHEMA,
    "batches": BATCHES_SCHEMA,
    "label_sets": LABEL_SETS_SCHEMA,
}
