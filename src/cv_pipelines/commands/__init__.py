"""Commands that run outside a single Kedro pipeline (`python -m cv_pipelines.commands.<name>`).

Not `cli`: Kedro would load a `cv_pipelines.cli` module as its project CLI.
"""
