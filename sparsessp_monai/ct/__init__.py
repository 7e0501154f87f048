"""
Sparse-slice CT/MR to thin-slice reconstruction with SparseSSPNet: transforms, baselines, metrics and data helpers
used by the ``bundle/configs/ct_*.json`` configs.
"""

from sparsessp_monai.ct.data import NIFTI_SUFFIXES, ct_datalist, write_sparse_nifti
from sparsessp_monai.ct.evaluation import METRICS, SUBSETS, reconstruction_scores
from sparsessp_monai.ct.transforms import (
    MODALITIES,
    RESAMPLE_MODES,
    WINDOW_KEY,
    CheckVolumed,
    CubicResampleZ,
    CubicResampleZd,
    InverseWindowd,
    KeepAcquiredSlicesd,
    ThinSliceResampled,
    WindowIntensityd,
    acquired_mask,
    cubic_bspline_matrix,
)

__all__ = [
    "METRICS",
    "MODALITIES",
    "NIFTI_SUFFIXES",
    "RESAMPLE_MODES",
    "SUBSETS",
    "WINDOW_KEY",
    "CheckVolumed",
    "CubicResampleZ",
    "CubicResampleZd",
    "InverseWindowd",
    "KeepAcquiredSlicesd",
    "ThinSliceResampled",
    "WindowIntensityd",
    "acquired_mask",
    "ct_datalist",
    "cubic_bspline_matrix",
    "reconstruction_scores",
    "write_sparse_nifti",
]
