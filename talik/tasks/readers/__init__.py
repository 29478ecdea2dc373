"""talik.tasks.readers."""
