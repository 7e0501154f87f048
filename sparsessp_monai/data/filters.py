"""
Deterministic numpy filters of the synthetic cell generator: separable (derivative-of-)Gaussian blurs, a lateral
Laplacian, a compact bump profile and a per-volume z-score.

All of them use element-wise float32 arithmetic, ``math.exp`` for kernel taps and sequential sums only (no BLAS,
no SIMD-dispatched transcendental ufuncs), so their results are bit-identical on every CPU with the same numpy
version; MONAI's / scipy's filters do not promise that, which is why the generator does not use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bump", "correlate1d", "gaussian_filter", "gaussian_kernel", "lateral_laplacian", "zscore_volume"]


def gaussian_kernel(sigma: float, derivative: bool = False, truncate: float = 3.5) -> np.ndarray:
    """A normalised 1D Gaussian kernel of ``2 * ceil(truncate * sigma) + 1`` taps (float64).

    With ``derivative=True`` it is the derivative-of-Gaussian kernel, normalised so that correlating a unit ramp
    gives a unit slope.
    """
    radius = max(1, math.ceil(truncate * sigma))
    xs = range(-radius, radius + 1)
    # math.exp rather than np.exp: kernel values must not depend on the CPU's SIMD dispatch
    g = [math.exp(-0.5 * (x / sigma) ** 2) for x in xs]
    total = sum(g)
    g = [v / total for v in g]
    if derivative:
        # used as a correlation (not a convolution), hence +x; normalised so that a unit ramp has unit slope
        d = [x * v for x, v in zip(xs, g)]
        norm = sum(x * v for x, v in zip(xs, d))
        g = [v / norm for v in d]
    return np.asarray(g, dtype=np.float64)


def correlate1d(vol: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlate a float32 volume with an odd-length 1D kernel along ``axis``, edge-replicated borders.

    Returns a float32 array of ``vol``'s shape.
    """
    radius = (len(kernel) - 1) // 2
    n = vol.shape[axis]
    pad = [(0, 0)] * vol.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(vol, pad, mode="edge")
    index: list[slice] = [slice(None)] * vol.ndim

    def tap(j: int) -> np.ndarray:
        index[axis] = slice(j, j + n)
        return padded[tuple(index)]

    out = np.multiply(tap(radius), np.float32(kernel[radius]))
    tmp = np.empty_like(out)
    symmetric = bool(np.all(kernel == kernel[::-1]))
    antisymmetric = bool(np.all(kernel == -kernel[::-1]))
    for j in range(radius):
        w = np.float32(kernel[j])
        if symmetric or antisymmetric:
            # pairing mirrored taps halves the multiplications
            if symmetric:
                np.add(tap(j), tap(2 * radius - j), out=tmp)
            else:
                np.subtract(tap(j), tap(2 * radius - j), out=tmp)
            tmp *= w
            out += tmp
        else:
            np.multiply(tap(j), w, out=tmp)
            out += tmp
            np.multiply(tap(2 * radius - j), np.float32(kernel[2 * radius - j]), out=tmp)
            out += tmp
    return out


def gaussian_filter(vol: np.ndarray, sigma_zyx: Sequence[float], derivative_axes: Sequence[int] = ()) -> np.ndarray:
    """Separable Gaussian blur of a (Z, Y, X) volume; returns float32 of the same shape.

    A sigma of 0 leaves its axis alone; axes listed in ``derivative_axes`` use a derivative-of-Gaussian kernel.
    """
    out = np.ascontiguousarray(vol, dtype=np.float32)
    for axis, sigma in enumerate(sigma_zyx):
        if sigma > 0:
            out = correlate1d(out, gaussian_kernel(float(sigma), derivative=axis in derivative_axes), axis)
    return out


def lateral_laplacian(vol: np.ndarray) -> np.ndarray:
    """Five-point Laplacian in Y and X of a (Z, Y, X) volume (edge-replicated borders), same shape."""
    p = np.pad(vol, ((0, 0), (1, 1), (1, 1)), mode="edge")
    c = p[:, 1:-1, 1:-1]
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * c


def bump(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth compact bump (1 - (d/w)^2)^2 of a distance array, a polynomial stand-in for a Gaussian profile."""
    t = np.float32(1.0) - np.square(d * np.float32(1.0 / width))
    np.maximum(t, 0.0, out=t)
    return t * t


def zscore_volume(vol: np.ndarray) -> np.ndarray:
    """Mean 0, standard deviation 1 over the whole array (float64 sums), returned as float32; a constant array is
    only centred."""
    v64 = vol.astype(np.float64)
    mean = float(v64.sum() / v64.size)
    v64 -= mean
    std = math.sqrt(float(np.square(v64).sum() / v64.size))
    if std > 0:
        v64 /= std
    return v64.astype(np.float32)
