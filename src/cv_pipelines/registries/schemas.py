"""Column schemas of the registries that labeling writes and export reads.

Boxes are in pixels of the image as a model sees it: after EXIF orientation, the same
frame of reference as the ``width``/``height`` columns of the images registry.
"""

from __future__ import annotations

import pyarrow as pa

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
