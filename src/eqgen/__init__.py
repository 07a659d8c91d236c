"""eqgen: Equivariant Image Modeling in PyTorch."""
__version__ = "0.1.0"
