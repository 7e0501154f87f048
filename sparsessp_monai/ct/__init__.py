"""
Sparse-slice CT/MR to thin-slice reconstruction with SparseSSPNet: transforms, metrics and data helpers used by
the ``bundle/configs/ct_*.json`` configs. The thin grid (and the cubic / trilinear baselines) is rebuilt by
:class:`sparsessp_monai.transforms.PrefixResampleZd`.
"""

from sparsessp_monai.ct.data import NIFTI_SUFFIXES, ct_datalist, write_sparse_nifti
from sparsessp_monai.ct.evaluation import METRICS, SUBSETS, reconstruction_scores
from sparsessp_monai.ct.losses import SliceSSIMMSELoss
from sparsessp_monai.ct.transforms import (
    MODALITIES,
    WINDOW_KEY,
    AcquiredMaskd,
    CheckDicomSeriesd,
    CheckVolumed,
    InverseWindowd,
    KeepAcquiredSlicesd,
    WindowIntensityd,
    acquired_mask,
    placement_from_meta,
    window_of,
)

__all__ = [
    "METRICS",
    "MODALITIES",
    "NIFTI_SUFFIXES",
    "SUBSETS",
    "WINDOW_KEY",
    "AcquiredMaskd",
    "CheckDicomSeriesd",
    "CheckVolumed",
    "InverseWindowd",
    "KeepAcquiredSlicesd",
    "SliceSSIMMSELoss",
    "WindowIntensityd",
    "acquired_mask",
    "ct_datalist",
    "placement_from_meta",
    "reconstruction_scores",
    "window_of",
    "write_sparse_nifti",
]
