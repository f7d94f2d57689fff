"""Custom Kedro datasets of cv_pipelines."""
