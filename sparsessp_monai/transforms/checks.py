"""
Checks of loaded input volumes, run right after loading (before any normalisation changes the values), so that a
bad file is refused with its name and the problem instead of failing later in a convolution or giving a
meaningless result.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.transforms.array import image_name
from sparsessp_monai.transforms.finite import count_nonfinite

__all__ = ["CheckInputd", "check_input_volume"]

logger = logging.getLogger(__name__)


def check_input_volume(
    img: NdarrayOrTensor, name: str, in_channels: int | None = None, min_size: int = 1, warn_constant: bool = True
) -> torch.Tensor:
    """Check a loaded volume ``(C, S0, S1, S2)`` as read from its file, and return it as a tensor.

    Args:
        img: the volume, channel first.
        name: the file it came from (the subject of every message).
        in_channels: the number of channels the model takes; ``None`` accepts any.
        min_size: the fewest voxels along every spatial axis.
        warn_constant: log a warning naming the file when every voxel has the same value (a blank stack gives a
            prediction without meaning).

    Raises:
        BundleInputError: not a 3D volume (a 2D image, a time series), a wrong number of channels, a spatial axis
            shorter than ``min_size``, or NaN/Inf voxels (counted in the file's values).
    """
    t = convert_to_tensor(img, track_meta=False)
    if t.ndim != 4:
        kind = "a 2D image" if t.ndim < 4 else f"{t.ndim - 1} non-channel axes (a time series?)"
        raise BundleInputError(f"{name}: shape {tuple(t.shape)} is {kind}; a 3D volume (C, Z, Y, X) is needed.")
    if in_channels is not None and t.shape[0] != in_channels:
        raise BundleInputError(
            f"{name}: {t.shape[0]} channels (shape {tuple(t.shape)}), but the model takes {in_channels}; save the "
            "transmitted-light channel alone (one file per channel)."
        )
    if min(t.shape[1:]) < min_size:
        raise BundleInputError(
            f"{name}: spatial shape {tuple(t.shape[1:])} has an axis shorter than {min_size} voxels "
            "(too few slices); a 3D volume is needed."
        )
    bad = count_nonfinite(t)
    if bad:
        raise BundleInputError(
            f"{name}: {bad} of {t.numel()} voxels are NaN/Inf; clean or mask the file before prediction."
        )
    if warn_constant and t.numel():
        # min == max: two reductions, no volume-sized comparison mask
        low, high = torch.aminmax(t.to(torch.uint8) if t.dtype == torch.bool else t)
        if bool(low == high):
            logger.warning(f"{name}: every voxel is {float(low):g} (a blank stack); its prediction is meaningless.")
    return t


class CheckInputd(MapTransform):
    """
    Refuse unusable loaded volumes with the file name and the problem (see :func:`check_input_volume`), and warn
    about blank ones. Place it right after ``LoadImaged``: NaN counts are then those of the file, before
    normalisation spreads one NaN over the whole volume.

    With ``same_shape`` every present key must have the spatial shape of the first one (an image and its label for
    training, whose crops must line up); the message names both files.

    Args:
        keys: the image keys.
        in_channels: channels the model takes (``None``: any); applied to the first key only, the network input.
        min_size: fewest voxels along every spatial axis.
        same_shape: require one spatial shape for all present keys.
        warn_constant: warn about constant volumes.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        BundleInputError: naming the file(s) and the problem.
    """

    def __init__(
        self,
        keys: KeysCollection,
        in_channels: int | None = None,
        min_size: int = 1,
        same_shape: bool = False,
        warn_constant: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.in_channels = None if in_channels is None else int(in_channels)
        self.min_size = int(min_size)
        self.same_shape = bool(same_shape)
        self.warn_constant = bool(warn_constant)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first: tuple[str, tuple[int, ...]] | None = None
        for i, key in enumerate(self.key_iterator(d)):
            name = image_name(d[key], key)
            channels = self.in_channels if i == 0 else None
            t = check_input_volume(d[key], name, channels, self.min_size, self.warn_constant)
            shape = tuple(t.shape[1:])
            if first is None:
                first = (name, shape)
            elif self.same_shape and shape != first[1]:
                raise BundleInputError(
                    f"{name} has spatial shape {shape} but {first[0]} has {first[1]}; an image and its label must "
                    "cover the same voxels."
                )
        return d
