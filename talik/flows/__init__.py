"""talik.flows."""
