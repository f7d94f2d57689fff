"""cv_pipelines: the whole life of an object detector as Kedro pipelines."""

__version__ = "0.1.0"
