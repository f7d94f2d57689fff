"""Running the project's pipelines on engines outside one process: Airflow, Dask, Kubernetes."""
