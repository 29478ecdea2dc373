"""talik.tasks.ingest."""
