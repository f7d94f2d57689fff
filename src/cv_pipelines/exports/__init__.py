"""Training-ready exports (YOLO, COCO) of the registries, versioned and checked.

- ``selection``: which images, splits and boxes an export holds (``plan_export``).
- ``writing``: the files of a version, its content hash (``content_hash_on_disk``
  re-hashes a written one), the staged write and rename under the label set's lock
  (``write_export``; ``ExportBuild``, what the catalog saves).
- ``versions``: which export (``ExportRef``, ``find_export``, ``latest_export``) and
  the data set YAML that points Ultralytics at one (``write_data_yaml``).
- ``checks``: Ultralytics' check of a YOLO export; ``coco``: the COCO form and its check.
- ``health``: the health report and the sample picture of an export.
- ``errors``: what can go wrong, with the fix in the message.

The catalog dataset over all of it is ``cv_pipelines.datasets.yolo_export_dataset``.
"""
