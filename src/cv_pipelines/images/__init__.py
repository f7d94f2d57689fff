"""Images: the checks that decide what is usable, the content-addressed store, ingestion."""
