"""The parquet registries: their schemas and their append-only part files."""
