"""Prefect flows: one per analysis and the parent ``monitor`` flow."""
