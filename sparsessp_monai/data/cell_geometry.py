"""
Geometric primitives of the synthetic cell scenes (:mod:`sparsessp_monai.data.cell_scene`): bounding boxes and
coordinate grids of (Z, Y, X) voxel volumes, an approximate ellipsoid signed distance, trilinear splatting of
points, and persistent random walks (filaments, tubes) inside a mask.

Coordinates are voxel indices (z, y, x) as float64 arrays of shape (N, 3); volumes are float32 (Z, Y, X).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "WALK_STEP",
    "box_around",
    "box_grid",
    "ellipsoid_sdf",
    "random_directions",
    "random_walks",
    "sample_in_mask",
    "splat",
]

WALK_STEP = 0.5
"""Step length (voxels) of :func:`random_walks`."""


def box_around(centre: np.ndarray, extent: np.ndarray | float, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The index box ``centre +- extent`` clipped to a volume of ``shape``, or None if nothing of it is inside."""
    lo = np.maximum(np.floor(centre - extent).astype(int), 0)
    hi = np.minimum(np.ceil(centre + extent).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def box_grid(box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable float32 z (n, 1, 1), y (1, n, 1) and x (1, 1, n) voxel coordinates of a box."""
    z = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None, None]
    y = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :, None]
    x = np.arange(box[2].start, box[2].stop, dtype=np.float32)[None, None, :]
    return z, y, x


def ellipsoid_sdf(box: tuple[slice, ...], centre: np.ndarray, radii: np.ndarray, theta: float) -> np.ndarray:
    """
    First-order signed distance (voxels, negative inside) to an ellipsoid rotated by ``theta`` about z, on a box.

    ``radii`` are (z, u, v) in the rotated frame. ``(r - 1) / |grad r|`` with ``r`` the normalised radius: exact on
    the axes, good enough near the surface, and bounded between ``-max(radii)`` and ``-min(radii)`` at the centre.
    Returns a float32 array of the box's shape.
    """
    z, y, x = box_grid(box)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    dz = z - np.float32(centre[0])
    dy = y - np.float32(centre[1])
    dx = x - np.float32(centre[2])
    qz = dz * np.float32(1.0 / radii[0])
    qu = (c * dx + s * dy) * np.float32(1.0 / radii[1])
    qv = (c * dy - s * dx) * np.float32(1.0 / radii[2])
    r2 = qz * qz + qu * qu + qv * qv
    g2 = (
        np.square(qz * np.float32(1.0 / radii[0]))
        + np.square(qu * np.float32(1.0 / radii[1]))
        + np.square(qv * np.float32(1.0 / radii[2]))
    )
    r = np.sqrt(r2)
    eps = np.float32(1e-4)
    ratio = (r + eps) / (np.sqrt(g2) + np.float32(eps / float(np.min(radii))))
    return (r - np.float32(1.0)) * ratio


def splat(shape: tuple[int, int, int], points: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """Trilinear splatting of weighted (N, 3) points into a float32 volume of ``shape`` (outside points dropped)."""
    out_size = int(np.prod(shape))
    if len(points) == 0:
        return np.zeros(shape, dtype=np.float32)
    pts = np.asarray(points, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(pts),))
    base = np.floor(pts).astype(np.int64)
    frac = pts - base
    dims = np.asarray(shape)
    flat_all, w_all = [], []
    for corner in range(8):
        offs = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        idx = base + offs
        cw = np.prod(np.where(offs == 1, frac, 1.0 - frac), axis=1) * w
        valid = np.all((idx >= 0) & (idx < dims), axis=1)
        flat_all.append(np.ravel_multi_index(tuple(idx[valid].T), shape))
        w_all.append(cw[valid])
    # bincount sums sequentially, so the result does not depend on the CPU's SIMD width
    acc = np.bincount(np.concatenate(flat_all), weights=np.concatenate(w_all), minlength=out_size)
    return acc.reshape(shape).astype(np.float32)


def _voxel_index(points: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, ...]:
    # nearest voxel of every point, clipped into the volume
    return tuple(np.clip(np.rint(points).astype(np.int64), 0, shape - 1).T)


def random_walks(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    n_steps: np.ndarray,
    allowed: np.ndarray,
    turn: float,
    z_damp: float,
    step: float = WALK_STEP,
    slide_around: np.ndarray | None = None,
    slide_centres: np.ndarray | None = None,
) -> np.ndarray:
    """
    Persistent random walks inside the boolean (Z, Y, X) mask ``allowed``; returns all visited points (M, 3).

    Every walker starts at a row of ``start`` (N, 3) heading along ``direction`` (N, 3), takes up to ``n_steps``
    (N,) steps of length ``step``, turning by normal noise of scale ``turn`` with the z component damped by
    ``z_damp``. A walker stops when it would leave ``allowed``. If ``slide_around`` (a boolean obstacle mask) is
    given, the inward radial component (w.r.t. ``slide_centres``, (N, 3)) is removed before a blocked step, so
    filaments wrap around the obstacle instead of stopping at it.
    """
    shape = np.asarray(allowed.shape)
    pos = start.astype(np.float64).copy()
    d = direction.astype(np.float64).copy()
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
    alive = n_steps > 0
    visited = [pos[alive].copy()]
    for k in range(int(n_steps.max(initial=0))):
        alive &= k < n_steps
        if not alive.any():
            break
        d += rng.normal(0.0, turn, size=d.shape)
        d[:, 0] *= z_damp
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
        new = pos + step * d
        idx = _voxel_index(new, shape)
        if slide_around is not None and slide_centres is not None:
            blocked = slide_around[idx] & alive
            if blocked.any():
                radial = pos[blocked] - slide_centres[blocked]
                radial /= np.linalg.norm(radial, axis=1, keepdims=True) + 1e-12
                inward = np.minimum(np.sum(d[blocked] * radial, axis=1, keepdims=True), 0.0)
                db = d[blocked] - inward * radial
                d[blocked] = db / (np.linalg.norm(db, axis=1, keepdims=True) + 1e-12)
                new = pos + step * d
                idx = _voxel_index(new, shape)
                alive &= ~slide_around[idx]
        inside = np.all((new >= -0.5) & (new <= shape - 0.5), axis=1)
        alive &= inside & allowed[idx]
        pos[alive] = new[alive]
        visited.append(pos[alive].copy())
    return np.concatenate(visited, axis=0)


def sample_in_mask(rng: np.random.Generator, mask: np.ndarray, count: int) -> np.ndarray:
    """``count`` random points (count, 3) in the voxels of a boolean mask, jittered within each voxel."""
    flat = np.flatnonzero(mask)
    if len(flat) == 0 or count <= 0:
        return np.zeros((0, 3))
    pick = flat[rng.integers(0, len(flat), size=count)]
    pts = np.stack(np.unravel_index(pick, mask.shape), axis=1).astype(np.float64)
    return pts + rng.uniform(-0.5, 0.5, size=pts.shape)


def random_directions(rng: np.random.Generator, n: int, z_scale: float) -> np.ndarray:
    """``n`` random unit vectors (n, 3), their z component shrunk by ``z_scale`` before normalising."""
    d = rng.normal(size=(n, 3))
    d[:, 0] *= z_scale
    return d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)
