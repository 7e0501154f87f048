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
from sparsessp_monai.transforms.checks import CheckInputd, check_input_volume
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
from sparsessp_monai.transforms.load import NIFTI_SUFFIXES, LoadVolume, LoadVolumed, is_nifti_name, load_datalist
from sparsessp_monai.transforms.orientation import DepthFirst, DepthFirstd, depth_first_ornt
from sparsessp_monai.transforms.ratio import ResolveZRatiod
from sparsessp_monai.transforms.save import SavePredictiond

__all__ = [
    "NIFTI_SUFFIXES",
    "PREFIX_MODES",
    "SPARSE_Z_KEY",
    "CheckInputd",
    "DepthFirst",
    "DepthFirstd",
    "LoadVolume",
    "LoadVolumed",
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
    "check_input_volume",
    "cubic_bspline_matrix",
    "cubic_z_matrix",
    "depth_first_ornt",
    "image_name",
    "is_nifti_name",
    "load_datalist",
    "ratio_from_z_steps",
    "validate_volume",
    "z_placement",
    "z_resample_plan",
]
