"""qdiff: quotient-space diffusion models of 3D molecular structure."""
__version__ = "0.1.0"
