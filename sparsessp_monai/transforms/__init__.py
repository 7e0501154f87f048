"""Sparse-Z transforms: simulate sparse acquisitions and rebuild the full Z grid."""

from sparsessp_monai.transforms.array import (
    PREFIX_MODES,
    SPARSE_Z_KEY,
    PrefixResampleZ,
    SubsampleZ,
    image_name,
    ratio_from_z_steps,
    validate_volume,
    z_placement,
    z_resample_plan,
)
from sparsessp_monai.transforms.bspline import cubic_bspline_matrix, cubic_z_matrix
from sparsessp_monai.transforms.dictionary import (
    PrefixResampleZD,
    PrefixResampleZd,
    PrefixResampleZDict,
    RandSubsampleZD,
    RandSubsampleZd,
    RandSubsampleZDict,
    StructureToTaskd,
    SubsampleZD,
    SubsampleZd,
    SubsampleZDict,
)
from sparsessp_monai.transforms.ratio import ResolveZRatiod
from sparsessp_monai.transforms.save import SavePredictiond

__all__ = [
    "PREFIX_MODES",
    "SPARSE_Z_KEY",
    "PrefixResampleZ",
    "PrefixResampleZD",
    "PrefixResampleZDict",
    "PrefixResampleZd",
    "RandSubsampleZD",
    "RandSubsampleZDict",
    "RandSubsampleZd",
    "ResolveZRatiod",
    "SavePredictiond",
    "StructureToTaskd",
    "SubsampleZ",
    "SubsampleZD",
    "SubsampleZDict",
    "SubsampleZd",
    "cubic_bspline_matrix",
    "cubic_z_matrix",
    "image_name",
    "ratio_from_z_steps",
    "validate_volume",
    "z_placement",
    "z_resample_plan",
]
