"""Sparse-Z transforms: simulate sparse acquisitions and rebuild the full Z grid."""

from sparsessp_monai.transforms.array import (
    SPARSE_Z_KEY,
    PrefixResampleZ,
    SubsampleZ,
    ratio_from_z_steps,
    validate_volume,
    z_resample_plan,
)
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
    "ratio_from_z_steps",
    "validate_volume",
    "z_resample_plan",
]
