from kedro.pipeline import Node, Pipeline

from .nodes import add_exclusions_from_csv, run_labeling_cycle


def create_pipeline(**kwargs) -> Pipeline:
    # `cvat_connection` is provided by the project's hooks from conf/local/credentials.yml
    # or CVAT_HOST/CVAT_ACCESS_TOKEN; nodes tagged "cvat" make the hooks check it first.
    return Pipeline(
        [
            Node(
                add_exclusions_from_csv,
                inputs=["params:labeling", "params:ingestion"],
                outputs="exclusions_csv_summary",
                name="add_exclusions_from_csv",
            ),
            Node(
                run_labeling_cycle,
                inputs=[
                    "params:labeling",
                    "params:ingestion",
                    "params:snapshot",
                    "cvat_connection",
                    "exclusions_csv_summary",
                ],
                outputs="labeling_cycle_report",
                name="run_labeling_cycle",
                tags=["cvat"],
            ),
        ]
    )
