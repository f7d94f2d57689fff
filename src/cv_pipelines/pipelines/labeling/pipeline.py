"""Wiring of the ``labeling`` pipeline: CSV exclusions -> one cycle with CVAT -> bookkeeping -> snapshot."""

from kedro.pipeline import Node, Pipeline

from .nodes import exclude_images_from_csv, record_labeling_cycle, run_labeling_cycle, snapshot_after_pull


def create_pipeline(**kwargs) -> Pipeline:
    """Read ``images_registry``, ``labels_registry`` and ``exclusions_registry``; write the pulled rows by batch."""
    # `cvat_connection` is the catalog's (credentials.yml's `cvat`, or CVAT_HOST and
    # CVAT_ACCESS_TOKEN); the project's hooks check it before the first node runs.
    return Pipeline(
        [
            Node(
                exclude_images_from_csv,
                inputs=["params:labeling", "images_registry", "image_store"],
                outputs=["exclusions_registry", "exclusions_csv_summary"],
                name="exclude_images_from_csv",
            ),
            Node(
                run_labeling_cycle,
                inputs=[
                    "params:labeling",
                    "params:ingestion",
                    "images_registry",
                    "labels_registry",
                    "exclusions_registry",
                    "label_sets_registry",
                    "image_store",
                    "labeling_batches",
                    "cvat_cache",
                    "cvat_connection",
                ],
                outputs=["pulled_annotations", "pulled_exclusions", "pulled_labels", "labeling_cycle"],
                name="run_labeling_cycle",
                tags=["cvat"],
            ),
            Node(
                record_labeling_cycle,
                inputs=["labeling_cycle", "pulled_labels", "image_store"],
                outputs=["batches_registry", "labeling_cycle_recorded"],
                name="record_labeling_cycle",
            ),
            Node(
                snapshot_after_pull,
                inputs=[
                    "labeling_cycle_recorded",
                    "batches_registry",
                    "image_store",
                    "params:snapshot",
                    "params:labeling",
                    "params:ingestion",
                ],
                outputs="labeling_cycle_report",
                name="snapshot_after_pull",
            ),
        ]
    )
