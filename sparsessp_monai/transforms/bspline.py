"""
Interpolating cubic B-spline resampling along one axis, as a dense matrix: the ``"cubic"`` mode of
:class:`~sparsessp_monai.transforms.PrefixResampleZ`, the classical "cubic-spline interpolation" baseline of
thin-slice reconstruction (``scipy.ndimage`` order 3 with ``mode="mirror"``, without depending on scipy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["cubic_bspline_matrix", "cubic_z_matrix"]


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

    Returns:
        float64 array of shape ``(len(coords), n)``.
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


def cubic_z_matrix(n: int, ratio: int, offset: int, full_depth: int) -> torch.Tensor:
    """float32 ``(full_depth, n)`` matrix rebuilding ``full_depth`` slices from ``n`` acquired ones.

    Acquired slice ``k`` sits at full-grid index ``offset + k * ratio``, so full-grid slice ``z`` is the spline
    evaluated at sparse coordinate ``(z - offset) / ratio``; ``matrix @ sparse`` (contracting the sparse axis) is
    the full grid.
    """
    coords = (np.arange(full_depth, dtype=np.float64) - offset) / ratio
    return torch.as_tensor(cubic_bspline_matrix(n, coords), dtype=torch.float32)
