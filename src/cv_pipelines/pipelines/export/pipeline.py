from kedro.pipeline import Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    # Registered now so the project's shape is fixed; its nodes land with issue #6.
    return Pipeline([])
