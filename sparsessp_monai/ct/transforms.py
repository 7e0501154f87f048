"""
Transforms for sparse-slice CT/MR volumes: input checks, intensity windows that remember their mapping, and data
consistency on the acquired slices. The thin grid itself is rebuilt by
:class:`~sparsessp_monai.transforms.PrefixResampleZd` (``mode="cubic"`` is the cubic B-spline baseline).

The volumes are MONAI channel-first arrays ``(C, S0, S1, S2)``; after ``Orientationd(axcodes="SPL")`` the
inferior-superior (axial slice) axis is spatial axis 0 (index increasing toward superior), the axis the network and
the sparse-Z transforms expect; each axial slice is then stored in the radiological display layout (rows from
anterior to posterior, columns from the patient's right to left).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange

from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.io.dicom import check_dicom_series
from sparsessp_monai.transforms.array import check_axis, check_ratio, image_name
from sparsessp_monai.transforms.checks import CheckInputd

__all__ = [
    "MODALITIES",
    "WINDOW_KEY",
    "AcquiredMaskd",
    "CheckDicomSeriesd",
    "CheckVolumed",
    "InverseWindowd",
    "KeepAcquiredSlicesd",
    "WindowIntensityd",
    "acquired_mask",
    "placement_from_meta",
    "window_of",
]

MODALITIES = ("CT", "MR")
WINDOW_KEY = "intensity_window"
"""Meta key holding ``[lo, hi]``: the intensities mapped to 0 and 1, so predictions map back to HU."""


class CheckVolumed(CheckInputd):
    """
    Reject unusable volumes right after loading, with the file name in the message: not a channel-first 3D volume
    (a 2D image or a 4D series), a spatial axis with fewer than ``min_size`` voxels, or NaN/Inf values; warn about a
    constant (blank) volume. :class:`~sparsessp_monai.transforms.CheckInputd` with the CT defaults.

    Raises:
        sparsessp_monai.engines.BundleInputError: naming the file and the problem (a ``ValueError``).
    """

    def __init__(self, keys: KeysCollection, min_size: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, min_size=min_size, allow_missing_keys=allow_missing_keys)


class WindowIntensityd(MapTransform):
    """
    Map intensities to ``[0, 1]`` with MONAI's :class:`~monai.transforms.ScaleIntensityRange` and record the window
    in ``meta["intensity_window"]`` so that predictions can be mapped back (MAE in HU, NIfTI output in HU).

    - ``modality="CT"``: a fixed HU window ``window`` (default -1000..1000 HU), the same for every scan.
    - ``modality="MR"``: the ``percentiles`` of the ``ref_key`` image (MR intensities have no absolute unit).

    The window is computed once per sample (from ``ref_key``, default the first key) and applied to every key, so
    input and target share one mapping.

    Args:
        keys: image keys to scale.
        modality: ``"CT"`` or ``"MR"``.
        window: ``(lo, hi)`` HU for CT.
        percentiles: ``(lower, upper)`` percentiles for MR.
        clip: clip to ``[0, 1]`` after scaling.
        ref_key: the key whose intensities define an MR window.
    """

    def __init__(
        self,
        keys: KeysCollection,
        modality: str = "CT",
        window: Sequence[float] = (-1000.0, 1000.0),
        percentiles: Sequence[float] = (0.5, 99.5),
        clip: bool = True,
        ref_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        modality = str(modality).upper()
        if modality not in MODALITIES:
            raise BundleInputError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        lo, hi = (float(v) for v in window)
        plo, phi = (float(v) for v in percentiles)
        if not hi > lo:
            raise BundleInputError(f"window must be (lo, hi) with hi > lo, got {tuple(window)}.")
        if not 0 <= plo < phi <= 100:
            raise BundleInputError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {tuple(percentiles)}.")
        self.modality, self.window, self.percentiles = modality, (lo, hi), (plo, phi)
        self.clip = bool(clip)
        self.ref_key = ref_key

    def compute_window(self, img: NdarrayOrTensor) -> tuple[float, float]:
        """The ``(lo, hi)`` intensities mapped to 0 and 1 for this image."""
        if self.modality == "CT":
            return self.window
        x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        # torch.quantile is limited to 16M elements: a regular subsample of at most ~2M voxels is plenty
        x = x.float().flatten()[:: max(1, x.numel() // 2_000_000)]
        q = torch.quantile(x, torch.tensor([p / 100 for p in self.percentiles]))
        lo, hi = float(q[0]), float(q[1])
        if not hi > lo:
            raise BundleInputError(
                f"{image_name(img)}: intensity percentiles {self.percentiles} give an empty window {lo}..{hi}."
            )
        return lo, hi

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        lo, hi = self.compute_window(d[self.ref_key if self.ref_key is not None else keys[0]])
        scale = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=self.clip, dtype=np.float32)
        for key in keys:
            out = scale(d[key])
            if isinstance(out, MetaTensor):
                out.meta[WINDOW_KEY] = [lo, hi]
            d[key] = out
        return d


def window_of(img: Any, default: Sequence[float] | None) -> tuple[float, float]:
    """The ``(lo, hi)`` window recorded by :class:`WindowIntensityd` in ``img``'s meta, else ``default``."""
    win = img.meta.get(WINDOW_KEY) if isinstance(img, MetaTensor) else None
    if win is None:
        win = default
    if win is None:
        raise ValueError(f"{image_name(img)}: no intensity window in the meta data and no default window given.")
    lo, hi = (float(torch.as_tensor(v).reshape(-1)[0]) for v in win)
    return lo, hi


class InverseWindowd(MapTransform):
    """Map ``[0, 1]`` intensities back to the original unit (HU for CT) with the window recorded by
    :class:`WindowIntensityd`: ``x * (hi - lo) + lo``. ``window`` is the fallback when the meta has none; ``clip``
    first clips to ``[0, 1]``, the range the model was trained on (the target was clipped to the window)."""

    def __init__(
        self,
        keys: KeysCollection,
        window: Sequence[float] | None = None,
        clip: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = window
        self.clip = bool(clip)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            lo, hi = window_of(d[key], self.window)
            x = d[key].clamp(0.0, 1.0) if self.clip else d[key]
            d[key] = x * (hi - lo) + lo
        return d


def acquired_mask(depth: int, ratio: int, offset: int) -> torch.Tensor:
    """Boolean ``(depth,)``: True at the acquired slices ``offset, offset + ratio, ...`` of the thin grid."""
    ratio = check_ratio(ratio)
    z = torch.arange(depth)
    return (z >= offset) & ((z - offset) % ratio == 0)


def placement_from_meta(img: Any) -> tuple[int, int]:
    """``(ratio, offset)`` of the acquired slices of a stack rebuilt by
    :class:`~sparsessp_monai.transforms.PrefixResampleZ` (its ``sparse_z_ratio`` / ``sparse_z_offset`` meta)."""
    meta = img.meta if isinstance(img, MetaTensor) else {}
    if "sparse_z_ratio" not in meta:
        raise ValueError(
            f"{image_name(img)}: no 'sparse_z_ratio' meta; resample the sparse stack with this package first."
        )
    ratio = int(torch.as_tensor(meta["sparse_z_ratio"]).reshape(-1)[0])
    offset = int(torch.as_tensor(meta.get("sparse_z_offset", 0)).reshape(-1)[0])
    return ratio, offset


class KeepAcquiredSlicesd(MapTransform):
    """
    Data consistency: copy the acquired slices of the resampled input ``ref_key`` (which hold the measured values
    exactly) into the prediction, so a model only ever changes the slices that were not acquired.

    Args:
        keys: prediction keys, ``(C, D, H, W)`` on the thin grid.
        ref_key: the resampled network input carrying ``sparse_z_ratio`` / ``sparse_z_offset`` meta.
        axis: the sparse spatial axis.
    """

    def __init__(self, keys: KeysCollection, ref_key: str = "image", axis: int = 0) -> None:
        super().__init__(keys)
        self.ref_key = ref_key
        self.axis = check_axis(axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.ref_key]
        ratio, offset = placement_from_meta(ref)
        dim = self.axis + 1
        idx = torch.nonzero(acquired_mask(int(ref.shape[dim]), ratio, offset)).reshape(-1)
        for key in self.key_iterator(d):
            pred = d[key]
            if tuple(pred.shape[1:]) != tuple(ref.shape[1:]):
                raise ValueError(f"{key} shape {tuple(pred.shape)} differs from {self.ref_key} {tuple(ref.shape)}.")
            out = pred.clone()
            out.index_copy_(dim, idx.to(out.device), ref.index_select(dim, idx.to(ref.device)).to(out))
            d[key] = out
        return d


class AcquiredMaskd(MapTransform):
    """
    Write the acquisition mask of a resampled sparse stack under ``mask_key``: a float ``(1, D, 1, 1)`` (depth at
    ``axis``) that is 1 on the acquired slices and 0 on the missing ones. Training passes it to
    :class:`~sparsessp_monai.networks.ResidualSparseSSP` (``acquired=``) so the loss only sees the slices the
    evaluation scores: with :class:`KeepAcquiredSlicesd` the acquired slices are the measured values whatever the
    network predicts there, and a loss on them would only teach the network to predict no correction, which it cannot
    do for the acquired slices alone because it cannot tell them from the missing ones.

    Args:
        keys: the resampled network input carrying ``sparse_z_ratio`` / ``sparse_z_offset`` meta (one key).
        mask_key: key of the mask written.
        axis: the sparse spatial axis.
    """

    def __init__(self, keys: KeysCollection, mask_key: str = "acquired", axis: int = 0) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"AcquiredMaskd takes one key, got {self.keys}.")
        self.mask_key = mask_key
        self.axis = check_axis(axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[self.keys[0]]
        ratio, offset = placement_from_meta(img)
        shape = [1, 1, 1, 1]
        shape[self.axis + 1] = int(img.shape[self.axis + 1])
        d[self.mask_key] = acquired_mask(shape[self.axis + 1], ratio, offset).to(torch.float32).reshape(shape)
        return d


class CheckDicomSeriesd(MapTransform):
    """
    Refuse a broken DICOM series folder before ``LoadImaged`` reads it (see
    :func:`sparsessp_monai.io.check_dicom_series`: files that are not DICOM, several series, a missing or repeated
    slice); files (NIfTI) pass unchecked. Put it before ``LoadImaged``: MONAI's reader would read such a folder
    without a word.

    Raises:
        BundleInputError: the problem, naming the folder.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)) and os.path.isdir(d[key]):
                check_dicom_series(d[key])
        return d
