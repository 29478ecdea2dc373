"""talik.tasks."""
