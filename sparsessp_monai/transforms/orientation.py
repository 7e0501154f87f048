"""
Depth first for NIfTI inputs: the network and the sparse-Z transforms take ``(C, Z, Y, X)`` volumes, but a NIfTI
stores its voxels as ``(X, Y, Z)`` with the orientation in its affine, so ``LoadImage`` gives ``(C, X, Y, Z)`` and
the sparse axis would be taken for X.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import InvertibleTransform, MapTransform, Orientation
from monai.transforms.spatial.functional import orientation
from monai.utils import convert_data_type

from sparsessp_monai.transforms.array import image_name
from sparsessp_monai.transforms.load import is_nifti_name

__all__ = ["DepthFirst", "DepthFirstd", "depth_first_ornt"]

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
_IDENTITY = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)


def depth_first_ornt(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform that puts a NIfTI's voxel axes in (Z, Y, X) world order, each axis keeping
    its direction (a permutation, no flips): the axis closest to the world's inferior-superior axis first.

    Args:
        affine: the 4x4 voxel-to-world affine of the file.

    Returns:
        A (3, 2) array for ``nibabel.orientations.apply_orientation``.
    """
    src = nib.orientations.io_orientation(affine)
    direction = {int(world): float(flip) for world, flip in src}
    dst = np.array([[2, direction[2]], [1, direction[1]], [0, direction[0]]], dtype=np.float64)
    return nib.orientations.ornt_transform(src, dst)


class DepthFirst(Orientation):
    """
    Put a NIfTI volume ``(C, X, Y, Z)`` (any stored axis order) in the ``(C, Z, Y, X)`` layout of the microscopy
    bundle, following the file's orientation: depth is the voxel axis closest to the world's inferior-superior axis,
    whatever order the file stores it in. Only axes are permuted (nothing is flipped or resampled) and the affine
    follows, so the file's z-step becomes the spacing of axis 0. Other files (TIFF, already ``(C, Z, Y, X)``) are
    left as they are.

    The change is recorded as an invertible transform, so ``Invertd`` writes a prediction back in the layout and
    orientation of its input (same affine, with the rebuilt z-step).
    """

    def __init__(self) -> None:
        # axcodes are not used (the permutation is worked out per file); labels are nibabel's RAS+ convention
        super().__init__(axcodes="RAS", labels=RAS_LABELS)

    def __call__(self, data_array: torch.Tensor, lazy: bool | None = None) -> torch.Tensor:
        """Permute a channel-first 3D ``MetaTensor`` read from a NIfTI file to ``(C, Z, Y, X)``."""
        if not isinstance(data_array, MetaTensor) or data_array.ndim != 4:
            return data_array
        affine = convert_data_type(data_array.peek_pending_affine(), np.ndarray)[0]
        # a recorded identity keeps the inverse uniform for files that need no change
        ornt = depth_first_ornt(to_affine_nd(3, affine)) if is_nifti_name(image_name(data_array)) else _IDENTITY
        return orientation(data_array, affine, ornt.copy(), lazy=False, transform_info=self.get_transform_info())


class DepthFirstd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`DepthFirst`; ``inverse`` restores the file's layout (see ``Invertd``)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = DepthFirst()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d
