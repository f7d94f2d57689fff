"""The Kedro pipelines, one sub-package each; ``pipeline_registry`` registers every one by its folder name."""
