"""SparseSSP for MONAI: predict full 3D volumes from sparse Z-slices."""

__version__ = "0.1.0"
