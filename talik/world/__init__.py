"""The synthetic Datong-like demo world: real file formats, with the truth written beside them."""

from talik.world.generate import generate_world, world_is_complete

__all__ = ["generate_world", "world_is_complete"]
