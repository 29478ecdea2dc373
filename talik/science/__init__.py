"""talik.science."""
