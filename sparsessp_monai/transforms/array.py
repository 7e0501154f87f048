"""
Array transforms that simulate sparse Z acquisition and rebuild the full Z grid.

Images are MONAI channel-first arrays ``(C, S0, S1, S2)``; ``axis`` selects the spatial axis that was
sparsely sampled (0 for microscopy ``(C, Z, Y, X)`` stacks, usually 2 for NIfTI CT ``(C, X, Y, Z)``).

Acquired slice ``k`` of a sparse stack sits at full-grid index ``offset + k * ratio``. That placement is
recorded in the ``"sparse_z"`` entry of a :class:`monai.data.MetaTensor`'s meta so that
:class:`PrefixResampleZ` can rebuild the grid the slices came from; for a genuinely sparse stack read from
disk the same placement is given by ``ratio`` (or the two z-steps) and the target depth.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor, get_track_meta
from monai.transforms import Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.transforms.bspline import cubic_z_matrix
from sparsessp_monai.transforms.finite import count_nonfinite

__all__ = [
    "PREFIX_MODES",
    "SPARSE_Z_KEY",
    "PrefixResampleZ",
    "SubsampleZ",
    "axis_scale_affine",
    "check_axis",
    "check_ratio",
    "image_name",
    "ratio_from_z_steps",
    "validate_volume",
    "z_placement",
    "z_resample_plan",
]

SPARSE_Z_KEY = "sparse_z"
PREFIX_MODES = ("nearest", "trilinear", "hold", "cubic")
"""The ways :class:`PrefixResampleZ` can fill the slices between acquired ones."""


def image_name(img: Any, key: Hashable = "image") -> str:
    """The file an image came from (``meta["filename_or_obj"]``), else ``key``: the subject of error messages."""
    if isinstance(img, MetaTensor):
        return str(img.meta.get("filename_or_obj", key))
    return str(key)


def validate_volume(img: NdarrayOrTensor, name: str = "image") -> torch.Tensor:
    """Return ``img`` as a tensor after checking it is a finite channel-first 3D volume ``(C, S0, S1, S2)``.

    Raises:
        BundleInputError: wrong rank, or NaN/Inf values; the message names ``name`` (a ``ValueError``).
    """
    t = convert_to_tensor(img, track_meta=get_track_meta())
    if t.ndim != 4:
        raise BundleInputError(
            f"{name} must be a channel-first 3D volume (C, D, H, W) with 4 dimensions, got shape {tuple(t.shape)}."
        )
    bad = count_nonfinite(t)
    if bad:
        raise BundleInputError(f"{name} contains {bad} NaN/Inf value(s); clean or mask the volume before resampling.")
    return t


def check_ratio(ratio: Any) -> int:
    """``ratio`` as a positive ``int`` (an integral float is accepted); :class:`BundleInputError` (a ``ValueError``)
    otherwise."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)):
        if isinstance(ratio, float) and ratio.is_integer():
            ratio = int(ratio)
        else:
            raise BundleInputError(f"ratio must be a positive integer, got {ratio!r}.")
    if ratio < 1:
        raise BundleInputError(f"ratio must be a positive integer, got {ratio!r}.")
    return int(ratio)


def check_axis(axis: int) -> int:
    """``axis`` as a spatial axis 0, 1 or 2 of a ``(C, S0, S1, S2)`` volume; :class:`BundleInputError` otherwise."""
    if axis not in (0, 1, 2):
        raise BundleInputError(f"axis must be a spatial axis 0, 1 or 2 of a (C, S0, S1, S2) volume, got {axis!r}.")
    return int(axis)


def ratio_from_z_steps(z_step: float, target_z_step: float, rtol: float = 1e-3) -> int:
    """Integer subsampling ratio between an acquired z-step and the target z-step.

    Args:
        z_step: spacing between acquired slices (any unit).
        target_z_step: spacing of the full grid to rebuild (same unit).
        rtol: relative tolerance for the ratio to count as an integer.

    Raises:
        BundleInputError: non-positive steps, or a ratio that is not an integer within ``rtol``.
    """
    if not (z_step > 0 and target_z_step > 0) or not math.isfinite(z_step) or not math.isfinite(target_z_step):
        raise BundleInputError(
            f"z-steps must be positive and finite, got z_step={z_step}, target_z_step={target_z_step}."
        )
    ratio = z_step / target_z_step
    nearest = round(ratio)
    if nearest < 1 or abs(ratio - nearest) > rtol * ratio:
        raise BundleInputError(
            f"acquired z-step {z_step} is not an integer multiple of the target z-step {target_z_step} "
            f"(ratio {ratio:.4f}); resample to a compatible target z-step."
        )
    return int(nearest)


def axis_scale_affine(affine: torch.Tensor, axis: int, scale: float, shift: float) -> torch.Tensor:
    """Affine of a grid whose voxel ``i`` along ``axis`` is voxel ``shift + scale * i`` of the old grid."""
    t = torch.eye(affine.shape[0], dtype=torch.float64)
    t[axis, axis] = scale
    t[axis, -1] = shift
    return (affine.to(torch.float64) @ t).to(affine.dtype)


class SubsampleZ(Transform):
    """
    Keep every ``ratio``-th slice along a spatial axis, starting at ``offset``: ``img[:, offset::ratio]``.

    This simulates a sparse acquisition from a fully sampled volume. On a :class:`~monai.data.MetaTensor`
    the affine is updated to the sparse grid and ``meta["sparse_z"]`` records ``ratio``, ``offset``,
    ``indices`` (kept full-grid indices), ``full_depth`` and ``axis``, so that :class:`PrefixResampleZ`
    can put every kept slice back at its true position.

    Args:
        ratio: keep one slice in ``ratio`` (1 keeps all).
        offset: index of the first kept slice, ``0 <= offset < ratio``.
        axis: spatial axis to subsample (0 = first spatial dim, i.e. Z of a ``(C, Z, Y, X)`` stack).
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, ratio: int, offset: int = 0, axis: int = 0) -> None:
        self.ratio = check_ratio(ratio)
        self.axis = check_axis(axis)
        if not 0 <= int(offset) < self.ratio:
            raise BundleInputError(f"offset must be in [0, ratio={self.ratio}), got {offset}.")
        self.offset = int(offset)

    def __call__(self, img: NdarrayOrTensor, offset: int | None = None) -> NdarrayOrTensor:
        """Subsample ``img`` ``(C, S0, S1, S2)``; ``offset`` overrides the constructor's for this call."""
        offset = self.offset if offset is None else int(offset)
        if not 0 <= offset < self.ratio:
            raise BundleInputError(f"offset must be in [0, ratio={self.ratio}), got {offset}.")
        t = validate_volume(img, image_name(img))
        full_depth = int(t.shape[self.axis + 1])
        if full_depth < self.ratio:
            raise BundleInputError(
                f"{image_name(t)}: too few slices for the ratio: depth {full_depth} along spatial axis {self.axis} "
                f"is smaller than ratio {self.ratio}."
            )
        if offset >= full_depth:
            raise BundleInputError(f"offset {offset} is outside a depth of {full_depth} slices.")
        indices = tuple(range(offset, full_depth, self.ratio))
        out = t.index_select(self.axis + 1, torch.tensor(indices, dtype=torch.int64, device=t.device))
        if isinstance(out, MetaTensor):
            out.meta = dict(out.meta)  # never mutate the input's meta dict
            out.affine = axis_scale_affine(out.affine, self.axis, float(self.ratio), float(offset))
            out.meta[SPARSE_Z_KEY] = {
                "ratio": self.ratio,
                "offset": offset,
                "indices": indices,
                "full_depth": full_depth,
                "axis": self.axis,
            }
        return out if isinstance(img, torch.Tensor) else convert_to_dst_type(out, img)[0]


def z_placement(
    img: NdarrayOrTensor, ratio: int | None = None, offset: int = 0, target_depth: int | None = None, axis: int = 0
) -> tuple[int, int, int, int]:
    """Where the acquired slices of a sparse ``(C, S0, S1, S2)`` stack sit on the full grid.

    Returns ``(ratio, offset, full_depth, axis)``: acquired slice ``k`` is full-grid slice ``offset + k * ratio``
    of ``full_depth`` along spatial ``axis``. Read from ``meta["sparse_z"]`` (written by :class:`SubsampleZ`) when
    ``img`` carries it, otherwise from the arguments, which describe a genuinely sparse stack; ``target_depth``
    defaults to ``n * ratio`` for ``n`` acquired slices.

    Raises:
        BundleInputError: no ``sparse_z`` meta and no ``ratio``.
    """
    info = img.meta.get(SPARSE_Z_KEY) if isinstance(img, MetaTensor) else None
    if info:
        return int(info["ratio"]), int(info["offset"]), int(info["full_depth"]), int(info["axis"])
    if ratio is None:
        raise BundleInputError(
            "the stack carries no 'sparse_z' meta: give the acquisition ratio (or z_step and target_z_step)."
        )
    n = int(img.shape[axis + 1])
    full_depth = n * ratio if target_depth is None else int(target_depth)
    return int(ratio), int(offset), full_depth, int(axis)


# output slices per block of PrefixResampleZ.apply_plan
_PLAN_BLOCK = 8


class PrefixResampleZ(Transform):
    """
    Rebuild the full Z grid from a sparse stack before the network ("prefix" z-mapping of SparseSSP).

    Acquired slice ``k`` is placed at full-grid index ``offset + k * ratio``; the other slices are filled by

    - ``"nearest"``: the closest acquired slice (ties go to the slice below),
    - ``"trilinear"``: linear interpolation along Z between the two neighbouring acquired slices (X and Y are
      already on the target grid, so trilinear resampling reduces to this); beyond the first/last acquired
      slice the edge slice is repeated,
    - ``"hold"``: ``torch.nn.functional.interpolate(mode="nearest")`` to the target depth, the behaviour of the
      SparseSSP reference code, which ignores ``offset`` and shifts slices by up to ``ratio - 1``,
    - ``"cubic"``: the interpolating cubic B-spline through the acquired slices
      (:func:`~sparsessp_monai.transforms.bspline.cubic_bspline_matrix`, ``scipy.ndimage`` order 3 with
      ``mode="mirror"``), the classical thin-slice CT/MR baseline.

    With ``"nearest"`` and ``"trilinear"`` the acquired slices are copied bit-exactly to their true positions,
    with ``"cubic"`` to float rounding. The output is on the full grid: the affine becomes the thin-slice one and
    ``meta["sparse_z_ratio"]`` / ``meta["sparse_z_offset"]`` record the placement (metrics and data consistency
    tell acquired slices from predicted ones with it).

    The placement comes from ``meta["sparse_z"]`` (written by :class:`SubsampleZ`) when present, otherwise from
    the arguments, which describe a genuinely sparse stack: ``ratio`` (or ``z_step`` and ``target_z_step``),
    ``offset`` and ``target_depth`` (default ``n * ratio`` for ``n`` acquired slices); see :func:`z_placement`.

    Args:
        mode: one of :data:`PREFIX_MODES`: ``"nearest"``, ``"trilinear"``, ``"hold"`` or ``"cubic"``.
        ratio: acquisition ratio for stacks without ``sparse_z`` meta.
        target_depth: full-grid depth for stacks without ``sparse_z`` meta.
        offset: full-grid index of the first acquired slice for stacks without ``sparse_z`` meta.
        axis: the sparse spatial axis.
        z_step: acquired slice spacing; with ``target_z_step`` it gives ``ratio``.
        target_z_step: spacing of the full grid.
        min_slices: fewer acquired slices than this is a "too few slices" error; default 2 for ``"cubic"`` (a
            spline through one slice is a constant), 1 for the other modes.
        max_ratio: a larger ratio is refused (``None``: no bound). A ratio far above what a model was trained for
            invents almost every slice and mostly comes from a mistake (a missing z-step, a typo), so the inference
            bundle refuses ratios above 16 unless ``--max_ratio`` is raised.

    Raises:
        BundleInputError: naming the file: too few slices for the placement, or a ratio above ``max_ratio``.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        mode: str = "trilinear",
        ratio: int | None = None,
        target_depth: int | None = None,
        offset: int = 0,
        axis: int = 0,
        z_step: float | None = None,
        target_z_step: float | None = None,
        min_slices: int | None = None,
        max_ratio: int | None = None,
    ) -> None:
        if mode not in PREFIX_MODES:
            raise BundleInputError(f"mode must be one of {PREFIX_MODES}, got {mode!r}.")
        self.mode = mode
        if ratio is None and z_step is not None and target_z_step is not None:
            ratio = ratio_from_z_steps(z_step, target_z_step)
        elif ratio is not None and z_step is not None and target_z_step is not None:
            if ratio_from_z_steps(z_step, target_z_step) != check_ratio(ratio):
                raise BundleInputError(
                    f"ratio {ratio} disagrees with z_step {z_step} / target_z_step {target_z_step}; "
                    "give one or the other."
                )
        self.ratio = None if ratio is None else check_ratio(ratio)
        self.target_depth = None if target_depth is None else int(target_depth)
        self.offset = int(offset)
        self.axis = check_axis(axis)
        self.min_slices = (2 if mode == "cubic" else 1) if min_slices is None else int(min_slices)
        self.max_ratio = None if max_ratio is None else check_ratio(max_ratio)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Resample a sparse ``(C, S0, S1, S2)`` stack to the full ``(C, ...)`` grid along the sparse axis."""
        name = image_name(img)
        t = validate_volume(img, name)
        ratio, offset, full_depth, axis = z_placement(t, self.ratio, self.offset, self.target_depth, self.axis)
        n = int(t.shape[axis + 1])
        if self.max_ratio is not None and ratio > self.max_ratio:
            raise BundleInputError(
                f"{name}: ratio {ratio} would rebuild {full_depth} slices from {n} ({ratio - 1} invented between "
                f"neighbouring acquired slices); ratios above max_ratio {self.max_ratio} are refused as a likely "
                f"mistake (a missing or wrong z-step, a typo); pass --max_ratio {ratio} if it is meant."
            )
        if n < 1:
            raise BundleInputError(f"{name}: the sparse stack has no slices.")
        if n < self.min_slices:
            raise BundleInputError(
                f"{name}: too few slices for the ratio: {n} acquired slice(s), need {self.min_slices}."
            )
        if not 0 <= offset < ratio:
            raise BundleInputError(f"offset must be in [0, ratio={ratio}), got {offset}.")
        last = offset + (n - 1) * ratio
        if last >= full_depth:
            raise BundleInputError(
                f"{name}: too few slices in the target depth for the ratio: {n} slices at ratio {ratio} "
                f"(offset {offset}) reach index {last}, beyond a target depth of {full_depth}."
            )
        dim = axis + 1
        if self.mode == "cubic":
            out = self.apply_matrix(t, cubic_z_matrix(n, ratio, offset, full_depth), dim)
        else:
            out = self.apply_plan(t, z_resample_plan(n, ratio, offset, full_depth, self.mode), dim)
        if isinstance(out, MetaTensor):
            out.meta = dict(out.meta)
            out.affine = axis_scale_affine(out.affine, axis, 1.0 / ratio, -offset / ratio)
            out.meta.pop(SPARSE_Z_KEY, None)
            # kept so metrics can tell acquired slices from predicted ones
            out.meta["sparse_z_ratio"] = ratio
            out.meta["sparse_z_offset"] = offset
        return out if isinstance(img, torch.Tensor) else convert_to_dst_type(out, img)[0]

    @staticmethod
    def apply_plan(
        t: torch.Tensor, plan: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], dim: int
    ) -> torch.Tensor:
        """Apply a :func:`z_resample_plan` ``(lo, hi, w)`` along tensor dimension ``dim`` of ``t``."""
        lo, hi, w = plan
        # the plan is built on the CPU; the volume may live on a GPU
        lo, hi = lo.to(t.device), hi.to(t.device)
        if w is None:
            return t.index_select(dim, lo)
        src = t if t.is_floating_point() else t.float()
        plain = src.as_tensor() if isinstance(src, MetaTensor) else src
        w = w.to(device=plain.device, dtype=plain.dtype)
        size = list(plain.shape)
        size[dim] = int(lo.numel())
        out = torch.empty(size, dtype=plain.dtype, device=plain.device)
        # a few output slices at a time: the whole-volume expression would hold four temporaries of the output's size
        # (2 GiB for 128 x 1024 x 1024 in float32); per element the arithmetic is the same, so is the result
        for start in range(0, size[dim], _PLAN_BLOCK):
            rows = slice(start, start + _PLAN_BLOCK)
            shape = [1] * plain.ndim
            shape[dim] = int(lo[rows].numel())
            wb = w[rows].reshape(shape)
            block = plain.index_select(dim, lo[rows]) * (1 - wb)
            block += plain.index_select(dim, hi[rows]) * wb
            out.narrow(dim, start, shape[dim]).copy_(block)
        if isinstance(t, MetaTensor):
            out = MetaTensor(out, meta=dict(t.meta), applied_operations=list(t.applied_operations))
        return out

    @staticmethod
    def apply_matrix(t: torch.Tensor, matrix: torch.Tensor, dim: int) -> torch.Tensor:
        """Contract tensor dimension ``dim`` of ``t`` (size ``n``) with a ``(full_depth, n)`` resampling matrix."""
        src = t if t.is_floating_point() else t.float()
        plain = src.as_tensor() if isinstance(src, MetaTensor) else src
        m = matrix.to(device=plain.device, dtype=plain.dtype)
        # tensordot contracts the leading axis; move the sparse axis there and the rebuilt one back in place
        out = torch.movedim(torch.tensordot(m, torch.movedim(plain, dim, 0), dims=1), 0, dim)
        if isinstance(t, MetaTensor):
            out = MetaTensor(out, meta=dict(t.meta), applied_operations=list(t.applied_operations))
        return out


def z_resample_plan(
    n: int, ratio: int, offset: int, full_depth: int, mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Source slices and weights that rebuild ``full_depth`` slices from ``n`` acquired ones.

    Returns ``(lo, hi, w)``: full-grid slice ``z`` is ``(1 - w[z]) * sparse[lo[z]] + w[z] * sparse[hi[z]]``;
    ``w`` is ``None`` for the index-only modes (``"nearest"``, ``"hold"``), where slice ``z`` is ``sparse[lo[z]]``.
    """
    z = torch.arange(full_depth, dtype=torch.int64)
    if mode == "hold":
        # integer form of F.interpolate(mode="nearest"): src = floor(dst * in / out)
        return (z * n) // full_depth, (z * n) // full_depth, None
    pos = offset + ratio * torch.arange(n, dtype=torch.int64)
    hi = torch.searchsorted(pos, z).clamp(max=n - 1)
    lo = torch.where(pos[hi] <= z, hi, (hi - 1).clamp(min=0))
    gap = (pos[hi] - pos[lo]).to(torch.float64)
    frac = torch.where(gap > 0, (z - pos[lo]).to(torch.float64) / gap.clamp(min=1), torch.zeros_like(gap))
    if mode == "nearest":
        nearest = torch.where(frac > 0.5, hi, lo)
        return nearest, nearest, None
    if mode == "trilinear":
        return lo, hi, frac.to(torch.float32)
    raise ValueError(f"mode must be one of {PREFIX_MODES}, got {mode!r}.")
