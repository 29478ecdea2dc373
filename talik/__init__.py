"""talik: permafrost degradation monitoring from InSAR deformation and streamflow recession."""

__version__ = "0.1.0"

__all__ = ["__version__"]
