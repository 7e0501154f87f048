"""
Transforms for sparse-slice CT/MR volumes: input checks, intensity windows that remember their mapping, a cubic
B-spline baseline along the sparse axis, and data consistency on the acquired slices.

The volumes are MONAI channel-first arrays ``(C, S0, S1, S2)``; after ``Orientationd(axcodes="SPL")`` the
inferior-superior (axial slice) axis is spatial axis 0 (index increasing toward superior), the axis the network and
the sparse-Z transforms expect; each axial slice is then stored in the radiological display layout (rows from
anterior to posterior, columns from the patient's right to left).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import convert_to_dst_type

from sparsessp_monai.transforms.array import (
    SPARSE_Z_KEY,
    PrefixResampleZ,
    axis_scale_affine,
    check_axis,
    check_ratio,
    validate_volume,
)

__all__ = [
    "MODALITIES",
    "RESAMPLE_MODES",
    "WINDOW_KEY",
    "CheckVolumed",
    "CubicResampleZ",
    "CubicResampleZd",
    "InverseWindowd",
    "KeepAcquiredSlicesd",
    "ThinSliceResampled",
    "WindowIntensityd",
    "acquired_mask",
    "cubic_bspline_matrix",
]

MODALITIES = ("CT", "MR")
RESAMPLE_MODES = ("nearest", "trilinear", "hold", "cubic")
WINDOW_KEY = "intensity_window"
"""Meta key holding ``[lo, hi]``: the intensities mapped to 0 and 1, so predictions map back to HU."""


def _name(img: Any, key: Hashable = "image") -> str:
    if isinstance(img, MetaTensor):
        return str(img.meta.get("filename_or_obj", key))
    return str(key)


def _mirror(k: np.ndarray, n: int) -> np.ndarray:
    """Fold integer sample indices into ``[0, n)`` by whole-sample mirroring (``d c b | a b c d | c b a``)."""
    if n == 1:
        return np.zeros_like(k)
    period = 2 * n - 2
    k = np.mod(k, period)
    return np.where(k >= n, period - k, k)


def _bspline3(x: np.ndarray) -> np.ndarray:
    """The centred cubic B-spline kernel."""
    a = np.abs(x)
    return np.where(a < 1, 2.0 / 3.0 - a**2 + a**3 / 2.0, np.where(a < 2, (2.0 - a) ** 3 / 6.0, 0.0))


def cubic_bspline_matrix(n: int, coords: Sequence[float] | np.ndarray) -> np.ndarray:
    """Matrix ``M`` (``len(coords) x n``) of interpolating cubic B-spline resampling with mirror boundaries.

    ``M @ f`` evaluates at ``coords`` (in sample units) the cubic B-spline that passes through the ``n`` samples
    ``f``, the signal being extended by whole-sample mirroring, which is ``scipy.ndimage.map_coordinates(order=3,
    mode="mirror")`` along one axis. The prefilter is solved exactly (the ``n x n`` system of the mirrored
    B-spline), not with a truncated recursive filter, so acquired samples come back to rounding precision.

    Args:
        n: number of samples (>= 1).
        coords: positions to evaluate, any real numbers.
    """
    if n < 1:
        raise ValueError(f"need at least one sample, got {n}.")
    coords = np.asarray(coords, dtype=np.float64)
    # sampling matrix S[i, k]: B-spline value at sample i of coefficient k, mirrored coefficients folded in
    offsets = np.arange(-2, 3)

    def fold(x: np.ndarray) -> np.ndarray:
        base = np.floor(x)[:, None] + offsets[None, :]
        w = _bspline3(x[:, None] - base)
        out = np.zeros((x.size, n))
        rows = np.repeat(np.arange(x.size), offsets.size)
        np.add.at(out, (rows, _mirror(base.astype(np.int64), n).ravel()), w.ravel())
        return out

    prefilter = np.linalg.inv(fold(np.arange(n, dtype=np.float64)))
    return fold(coords) @ prefilter


class CubicResampleZ(Transform):
    """
    Rebuild the full grid of a sparse stack by interpolating cubic B-splines along the sparse axis, the classical
    "cubic-spline interpolation" baseline for thin-slice reconstruction (order-3 spline of ``scipy.ndimage`` with
    ``mode="mirror"``; the in-plane axes are already on the target grid).

    The placement of the acquired slices comes from ``meta["sparse_z"]`` (written by
    :class:`~sparsessp_monai.transforms.SubsampleZ`) or from the arguments, exactly as in
    :class:`~sparsessp_monai.transforms.PrefixResampleZ`; acquired slices are reproduced to float rounding, the
    affine becomes the thin-slice one and ``sparse_z_ratio`` / ``sparse_z_offset`` are recorded.

    Args:
        ratio: acquisition ratio for stacks without ``sparse_z`` meta.
        target_depth: full-grid depth for stacks without ``sparse_z`` meta (default ``n * ratio``).
        offset: full-grid index of the first acquired slice for stacks without ``sparse_z`` meta.
        axis: the sparse spatial axis.
        min_slices: fewer acquired slices than this is an error (a spline through one slice is a constant).
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        ratio: int | None = None,
        target_depth: int | None = None,
        offset: int = 0,
        axis: int = 0,
        min_slices: int = 2,
    ) -> None:
        # PrefixResampleZ does the argument checks and knows how to read the placement
        self._prefix = PrefixResampleZ(mode="nearest", ratio=ratio, target_depth=target_depth, offset=offset, axis=axis)
        self.min_slices = int(min_slices)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Resample a sparse ``(C, S0, S1, S2)`` stack to the full grid along the sparse axis."""
        t = validate_volume(img)
        ratio, offset, full_depth, axis = self._prefix._placement(t)
        n = int(t.shape[axis + 1])
        if n < self.min_slices:
            raise ValueError(
                f"{_name(t)}: too few slices for the ratio: {n} acquired slice(s), need {self.min_slices}."
            )
        if offset + (n - 1) * ratio >= full_depth:
            raise ValueError(
                f"{_name(t)}: too few slices in the target depth for the ratio: {n} slices at ratio {ratio} "
                f"(offset {offset}) do not fit a target depth of {full_depth}."
            )
        coords = (np.arange(full_depth, dtype=np.float64) - offset) / ratio
        m = torch.as_tensor(cubic_bspline_matrix(n, coords), dtype=torch.float32)
        src = t if t.is_floating_point() else t.float()
        dim = axis + 1
        # contract the sparse axis with the (full_depth x n) resampling matrix, then put the axis back in place
        plain = src.as_tensor() if isinstance(src, MetaTensor) else src
        out = torch.movedim(torch.tensordot(m.to(plain.dtype), torch.movedim(plain, dim, 0), dims=1), 0, dim)
        if isinstance(t, MetaTensor):
            out = MetaTensor(out, meta=dict(t.meta), applied_operations=list(t.applied_operations))
            out.affine = axis_scale_affine(t.affine, axis, 1.0 / ratio, -offset / ratio)
            out.meta.pop(SPARSE_Z_KEY, None)
            out.meta["sparse_z_ratio"] = ratio
            out.meta["sparse_z_offset"] = offset
        return out if isinstance(img, torch.Tensor) else convert_to_dst_type(out, img)[0]


class ThinSliceResampled(MapTransform):
    """
    Rebuild the thin-slice grid of a sparse stack with a configurable method: ``"cubic"`` (:class:`CubicResampleZ`)
    or one of the modes of :class:`~sparsessp_monai.transforms.PrefixResampleZ` (``"nearest"``, ``"trilinear"``,
    ``"hold"``). Lets one config value (``prefix_mode``) choose the network input.

    Args:
        keys: image keys.
        mode: ``"cubic"``, ``"trilinear"``, ``"nearest"`` or ``"hold"``.
        ratio, target_depth, offset, axis, ratio_key: as in :class:`CubicResampleZd`.
        min_slices: fewer acquired slices than this is an error.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "cubic",
        ratio: int | None = None,
        target_depth: int | None = None,
        offset: int = 0,
        axis: int = 0,
        ratio_key: str | None = None,
        min_slices: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if mode not in RESAMPLE_MODES:
            raise ValueError(f"mode must be one of {RESAMPLE_MODES}, got {mode!r}.")
        self.mode = mode
        self.ratio = ratio
        self.kwargs = {"target_depth": target_depth, "offset": offset, "axis": check_axis(axis)}
        self.ratio_key = ratio_key
        self.min_slices = int(min_slices)

    def _transform(self, ratio: int | None) -> Transform:
        if self.mode == "cubic":
            return CubicResampleZ(ratio=ratio, min_slices=self.min_slices, **self.kwargs)
        return PrefixResampleZ(mode=self.mode, ratio=ratio, **self.kwargs)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        ratio = self.ratio
        if self.ratio_key is not None and d.get(self.ratio_key) is not None:
            ratio = int(d[self.ratio_key])
        resample = self._transform(ratio)
        for key in self.key_iterator(d):
            img = d[key]
            n = int(img.shape[self.kwargs["axis"] + 1]) if hasattr(img, "shape") and len(img.shape) == 4 else None
            if self.mode != "cubic" and n is not None and n < self.min_slices:
                raise ValueError(
                    f"{_name(img, key)}: too few slices for the ratio: {n} acquired slice(s), need {self.min_slices}."
                )
            d[key] = resample(img)
        return d


class CubicResampleZd(ThinSliceResampled):
    """Dictionary version of :class:`CubicResampleZ`: :class:`ThinSliceResampled` with ``mode="cubic"``;
    ``ratio_key`` names an entry holding the ratio of a genuinely sparse stack (as written by
    :class:`~sparsessp_monai.transforms.ResolveZRatiod`)."""

    backend = CubicResampleZ.backend

    def __init__(
        self,
        keys: KeysCollection,
        ratio: int | None = None,
        target_depth: int | None = None,
        offset: int = 0,
        axis: int = 0,
        ratio_key: str | None = None,
        min_slices: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, "cubic", ratio, target_depth, offset, axis, ratio_key, min_slices, allow_missing_keys)


class CheckVolumed(MapTransform):
    """
    Reject unusable volumes right after loading, with the file name in the message: not a channel-first 3D volume
    (a 2D image or a 4D series), a spatial axis with fewer than ``min_size`` voxels, or NaN/Inf values.

    Raises:
        ValueError: naming the file and the problem.
    """

    def __init__(self, keys: KeysCollection, min_size: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_size = int(min_size)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            name = _name(img, key)
            t = validate_volume(img, name=name)  # its message starts with the file name
            if min(t.shape[1:]) < self.min_size:
                raise ValueError(
                    f"{name}: spatial shape {tuple(t.shape[1:])} has an axis shorter than {self.min_size} voxels "
                    "(too few slices); a 3D volume is needed."
                )
        return d


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
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        lo, hi = (float(v) for v in window)
        plo, phi = (float(v) for v in percentiles)
        if not hi > lo:
            raise ValueError(f"window must be (lo, hi) with hi > lo, got {tuple(window)}.")
        if not 0 <= plo < phi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {tuple(percentiles)}.")
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
            raise ValueError(f"{_name(img)}: intensity percentiles {self.percentiles} give an empty window {lo}..{hi}.")
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
    win = img.meta.get(WINDOW_KEY) if isinstance(img, MetaTensor) else None
    if win is None:
        win = default
    if win is None:
        raise ValueError(f"{_name(img)}: no intensity window in the meta data and no default window given.")
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
    meta = img.meta if isinstance(img, MetaTensor) else {}
    if "sparse_z_ratio" not in meta:
        raise ValueError(f"{_name(img)}: no 'sparse_z_ratio' meta; resample the sparse stack with this package first.")
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
