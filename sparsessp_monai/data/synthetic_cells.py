"""
Deterministic synthetic paired volumes for demos and tests: a transmitted-light (brightfield) stack and the
fluorescence of ONE labelled structure, mimicking the AllenCell "label-free" data where every image carries the
label of a single structure only (partial labels).

Arrays are (Z, Y, X) float32 with 0.29 um isotropic voxels.

Scene model
-----------
A scene is drawn once per seed and shared by every structure, so ``make_sample(s, seed)`` for two structures
returns the same transmitted-light image:

* cells: half-ellipsoid domes (random lateral radii, in-plane orientation and height) sitting on a coverslip
  plane, centred on a jittered hexagonal lattice with random drop-outs; overlapping domes are split by a
  Voronoi rule on an approximate signed distance, which gives a packed monolayer with shared walls and gaps;
* per cell: a nucleus (ellipsoid well inside the cell) with nuclear envelope, 1-3 nucleoli and chromatin foci;
  mitochondria as persistent random walks (short puncta and longer tubes) in the cytoplasm; microtubules as stiff
  filaments growing from an MTOC next to the nucleus, sliding around it and stopping at the cortex; actin as a
  cortical shell plus basal stress fibres; plasma membrane as thin shells on free surfaces, shared walls and the
  basal side. Unlabelled lipid droplets and vesicles act as distractors that only show up in transmitted light.

Fluorescence
------------
The density of the requested structure blurred by an anisotropic Gaussian PSF (sigma_zyx = 1.4, 0.9, 0.9 voxels),
scaled to a photon budget over a small background, with Poisson shot noise and Gaussian read noise.

Transmitted light
-----------------
Every compartment contributes its own refractive-index contrast ``dn`` to a map ``n``: cytoplasm, a slightly
less dense nucleoplasm, a nuclear envelope, dense nucleoli, lipid droplets and mitochondria, thin membrane shells,
and weak filaments. Image formation follows the transport-of-intensity picture of defocused brightfield: a plane
at focus ``z0`` sees each object plane ``z`` through its lateral phase curvature weighted by the defocus
``z0 - z``, i.e. the lateral Laplacian of ``n`` convolved axially with an odd derivative-of-Gaussian kernel (wide,
sigma_z = 3 voxels, because the condenser aperture is small), so the contrast of an object flips sign above and
below its plane. A weaker in-focus term (even Gaussian kernel on the Laplacian) and an absorption term from dense
organelles are added. The result multiplies an illumination field with slow vignetting, a tilt and per-slice lamp
flicker, and is then converted to photons with Poisson and read noise. Every structure therefore leaves a trace,
but through a band-pass, sign-changing transfer function that is very different from the fluorescence PSF.

Determinism
-----------
All randomness comes from ``numpy.random.Generator`` seeded through ``SeedSequence``; volumes are computed with
element-wise arithmetic, ``sqrt`` and sequential ``bincount`` sums only (no SIMD-dispatched transcendental ufuncs
or BLAS), so the same arguments give bit-identical arrays on every run with the same numpy version.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "SPACING_ZYX_UM",
    "STRUCTURES",
    "generate_demo_dataset",
    "main",
    "make_sample",
    "make_sample_all_structures",
]

STRUCTURES: tuple[str, ...] = ("dna", "membrane", "mitochondria", "microtubules", "nucleoli", "actin")
"""Structure names; the index of a name is its task id."""

SPACING_ZYX_UM: tuple[float, float, float] = (0.29, 0.29, 0.29)
"""Voxel size (z, y, x) in micrometres."""

GENERATOR_VERSION = 1
"""Bumped whenever the image model changes, so cached demo datasets are regenerated."""

_MIN_DIM = 8
# distinct SeedSequence keys so the scene, the TL noise and each fluorescence noise are independent streams
_KEY_SCENE, _KEY_TL, _KEY_FLUO = 0, 1, 2

_FLUO_PSF_SIGMA = (1.4, 0.9, 0.9)
_TL_PSF_SIGMA = (3.0, 1.2, 1.2)

# refractive-index contrast (relative to the medium) of each density map; membranes are thin so they need a large
# dn to be visible, deposit maps are in "line density" units (see _LINE_WEIGHT)
_RI_CONTRAST = {
    "cell": 0.016,
    "nucleus": -0.006,
    "envelope": 0.012,
    "nucleoli": 0.03,
    "chromatin": 0.012,
    "membrane": 0.02,
    "mito": 0.03,
    "microtubules": 0.006,
    "actin": 0.008,
    "lipid": 0.06,
    "vesicles": 0.02,
}
# scene density maps that make up each labelled structure (for ablations of the transmitted-light optics)
_STRUCTURE_MAPS: dict[str, tuple[str, ...]] = {
    "dna": ("nucleus", "chromatin"),
    "membrane": ("membrane",),
    "mitochondria": ("mito",),
    "microtubules": ("microtubules",),
    "nucleoli": ("nucleoli",),
    "actin": ("actin",),
}
_ABSORPTION = {"nucleoli": 0.3, "mito": 0.1, "lipid": 0.6, "chromatin": 0.05}
# contrast gains of the TL terms: defocus (odd axial kernel) dominates, in-focus phase and absorption are weaker
_TL_GAIN_ODD = 70.0
_TL_GAIN_EVEN = 12.0
_TL_GAIN_ABS = 0.8
_TL_PHOTONS = 4000.0
_TL_READ_NOISE = 6.0
_FLUO_PHOTONS = 400.0
_FLUO_BACKGROUND = 20.0
_FLUO_READ_NOISE = 2.0

_WALK_STEP = 0.5
# deposits along a line are weighted so that after a unit lateral Gaussian blur the line peaks near 1
_LINE_WEIGHT = 2.0 * math.pi * _WALK_STEP


@dataclass
class _Cell:
    centre: np.ndarray  # (z, y, x) of the dome base centre
    radii: np.ndarray  # (height, a_u, a_v) in the rotated frame
    theta: float
    nuc_centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    nuc_radii: np.ndarray = field(default_factory=lambda: np.ones(3))


@dataclass
class _Scene:
    shape: tuple[int, int, int]
    maps: dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------------------------
# filtering
# --------------------------------------------------------------------------------------------------------------


def _gaussian_kernel(sigma: float, derivative: bool = False, truncate: float = 3.5) -> np.ndarray:
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


def _correlate1d(vol: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Correlate a float32 volume with a 1D kernel along one axis, edge-replicated borders."""
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


def _gaussian_filter(vol: np.ndarray, sigma_zyx: Sequence[float], derivative_axes: Sequence[int] = ()) -> np.ndarray:
    """Separable Gaussian blur; axes listed in ``derivative_axes`` use a derivative-of-Gaussian kernel."""
    out = np.ascontiguousarray(vol, dtype=np.float32)
    for axis, sigma in enumerate(sigma_zyx):
        if sigma > 0:
            out = _correlate1d(out, _gaussian_kernel(float(sigma), derivative=axis in derivative_axes), axis)
    return out


def _lateral_laplacian(vol: np.ndarray) -> np.ndarray:
    p = np.pad(vol, ((0, 0), (1, 1), (1, 1)), mode="edge")
    c = p[:, 1:-1, 1:-1]
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * c


def _bump(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth compact bump (1 - (d/w)^2)^2, a polynomial stand-in for a Gaussian profile."""
    t = np.float32(1.0) - np.square(d * np.float32(1.0 / width))
    np.maximum(t, 0.0, out=t)
    return t * t


def _splat(shape: tuple[int, int, int], points: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """Trilinear splatting of weighted points into a float32 volume."""
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
    acc = np.bincount(np.concatenate(flat_all), weights=np.concatenate(w_all), minlength=out_size)
    return acc.reshape(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# scene
# --------------------------------------------------------------------------------------------------------------


def _box(centre: np.ndarray, extent: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    lo = np.maximum(np.floor(centre - extent).astype(int), 0)
    hi = np.minimum(np.ceil(centre + extent).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _grid(box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None, None]
    y = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :, None]
    x = np.arange(box[2].start, box[2].stop, dtype=np.float32)[None, None, :]
    return z, y, x


def _ellipsoid_sdf(box: tuple[slice, ...], centre: np.ndarray, radii: np.ndarray, theta: float) -> np.ndarray:
    """
    First-order signed distance (voxels, negative inside) to an ellipsoid rotated by ``theta`` about z.

    ``(r - 1) / |grad r|`` with ``r`` the normalised radius: exact on the axes, good enough near the surface, and
    bounded between ``-max(radii)`` and ``-min(radii)`` at the centre.
    """
    z, y, x = _grid(box)
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


def _draw_cells(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[list[_Cell], float]:
    nz, ny, nx = shape
    z_sub = max(1.0, 0.12 * nz)
    top_margin = max(1.0, 0.06 * nz)
    # hiPSC monolayers are ~10 um tall; taller stacks get medium above the cells rather than taller cells
    max_height = max(2.0, min(36.0, nz - 1 - z_sub - top_margin))
    # ~5.8 um lateral radius for hiPSC-like cells, shrunk only when the field is too small to hold a few cells
    r_lat = max(3.0, min(20.0, 0.3 * min(ny, nx)))
    spacing = 1.7 * r_lat
    row_step = spacing * math.sqrt(3.0) / 2.0
    cells: list[_Cell] = []
    y0 = -0.5 * row_step
    row = 0
    while y0 < ny + 0.5 * row_step:
        x0 = -0.5 * spacing + (0.5 * spacing if row % 2 else 0.0)
        while x0 < nx + 0.5 * spacing:
            cy = y0 + rng.uniform(-0.2, 0.2) * spacing
            cx = x0 + rng.uniform(-0.2, 0.2) * spacing
            a_u = r_lat * rng.uniform(0.85, 1.25)
            a_v = r_lat * rng.uniform(0.75, 1.05)
            height = max_height * rng.uniform(0.7, 1.0)
            theta = rng.uniform(0.0, math.pi)
            keep = rng.uniform() > 0.12
            if keep:
                cells.append(_Cell(np.array([z_sub, cy, cx]), np.array([height, a_u, a_v]), theta))
            x0 += spacing
        y0 += row_step
        row += 1
    inside = [c for c in cells if 0 <= c.centre[1] < ny and 0 <= c.centre[2] < nx]
    if not inside:
        # the drop-out must never leave an empty field
        cells.append(
            _Cell(np.array([z_sub, ny / 2.0, nx / 2.0]), np.array([max_height * 0.85, r_lat, r_lat * 0.9]), 0.0)
        )
    return cells, z_sub


def _walk(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    n_steps: np.ndarray,
    allowed: np.ndarray,
    turn: float,
    z_damp: float,
    step: float = _WALK_STEP,
    slide_around: np.ndarray | None = None,
    slide_centres: np.ndarray | None = None,
) -> np.ndarray:
    """
    Persistent random walks inside the boolean mask ``allowed``; returns all visited points.

    A walker stops when it would leave ``allowed``. If ``slide_around`` (a boolean obstacle mask) is given, the
    inward radial component (w.r.t. ``slide_centres``) is removed before a blocked step, so filaments wrap around
    the obstacle instead of stopping at it.
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
        idx = tuple(np.clip(np.rint(new).astype(np.int64), 0, shape - 1).T)
        if slide_around is not None and slide_centres is not None:
            blocked = slide_around[idx] & alive
            if blocked.any():
                radial = pos[blocked] - slide_centres[blocked]
                radial /= np.linalg.norm(radial, axis=1, keepdims=True) + 1e-12
                inward = np.minimum(np.sum(d[blocked] * radial, axis=1, keepdims=True), 0.0)
                db = d[blocked] - inward * radial
                d[blocked] = db / (np.linalg.norm(db, axis=1, keepdims=True) + 1e-12)
                new = pos + step * d
                idx = tuple(np.clip(np.rint(new).astype(np.int64), 0, shape - 1).T)
                alive &= ~slide_around[idx]
        inside = np.all((new >= -0.5) & (new <= shape - 0.5), axis=1)
        alive &= inside & allowed[idx]
        pos[alive] = new[alive]
        visited.append(pos[alive].copy())
    return np.concatenate(visited, axis=0)


def _sample_in_mask(rng: np.random.Generator, mask: np.ndarray, count: int) -> np.ndarray:
    flat = np.flatnonzero(mask)
    if len(flat) == 0 or count <= 0:
        return np.zeros((0, 3))
    pick = flat[rng.integers(0, len(flat), size=count)]
    pts = np.stack(np.unravel_index(pick, mask.shape), axis=1).astype(np.float64)
    return pts + rng.uniform(-0.5, 0.5, size=pts.shape)


def _random_directions(rng: np.random.Generator, n: int, z_scale: float) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    d[:, 0] *= z_scale
    return d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)


def _draw_scene(seed: int, shape: tuple[int, int, int]) -> _Scene:
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_SCENE]))
    cells, z_sub = _draw_cells(rng, shape)
    big = np.float32(1e3)
    f1 = np.full(shape, big, dtype=np.float32)
    f2 = np.full(shape, big, dtype=np.float32)
    label = np.full(shape, -1, dtype=np.int32)

    # Voronoi split of overlapping domes on the signed distance, tracking the two nearest surfaces for the walls
    for i, cell in enumerate(cells):
        ext = np.array([cell.radii[0] + 3.0, *(np.full(2, cell.radii[1:].max() * 1.1 + 3.0))])
        box = _box(cell.centre, ext, shape)
        if box is None:
            continue
        f = _ellipsoid_sdf(box, cell.centre, cell.radii, cell.theta)
        s1, s2, lab = f1[box], f2[box], label[box]
        closer = f < s1
        s2[...] = np.where(closer, s1, np.minimum(s2, f))
        s1[...] = np.where(closer, f, s1)
        lab[closer] = i

    zc = np.arange(shape[0], dtype=np.float32)[:, None, None] - np.float32(z_sub)
    # signed distance to the nearest cell boundary (free surface, shared wall or coverslip), positive inside
    sd = np.minimum(np.minimum(-f1, np.float32(0.5) * (f2 - f1)), zc)
    cell_map = np.clip(sd + np.float32(0.5), 0.0, 1.0)
    membrane = _bump(sd, 1.2)

    nucleus = np.zeros(shape, dtype=np.float32)
    envelope = np.zeros(shape, dtype=np.float32)
    nucleoli = np.zeros(shape, dtype=np.float32)
    for i, cell in enumerate(cells):
        h = cell.radii[0]
        offset = rng.uniform(-0.08, 0.08, size=2) * cell.radii[1:]
        nz_c = z_sub + 0.42 * h
        nuc_radii = np.array(
            [max(1.0, min(0.3 * h, 0.42 * h - 1.5)), *(cell.radii[1:] * rng.uniform(0.48, 0.6, size=2))]
        )
        cell.nuc_centre = np.array([nz_c, cell.centre[1] + offset[0], cell.centre[2] + offset[1]])
        cell.nuc_radii = nuc_radii
        theta_n = cell.theta + rng.uniform(-0.3, 0.3)
        box = _box(cell.nuc_centre, nuc_radii.max() + 3.0, shape)
        if box is None:
            continue
        fn = _ellipsoid_sdf(box, cell.nuc_centre, nuc_radii, theta_n)
        own = (label[box] == i).astype(np.float32) * np.clip(sd[box] - np.float32(1.0), 0.0, 1.0)
        np.maximum(nucleus[box], np.clip(np.float32(0.5) - fn, 0.0, 1.0) * own, out=nucleus[box])
        np.maximum(envelope[box], _bump(fn, 1.0) * own, out=envelope[box])
        for _ in range(int(rng.integers(1, 4))):
            # keep nucleoli away from the envelope, as in real nuclei
            rel = rng.uniform(-0.4, 0.4, size=3) * nuc_radii
            c_no = cell.nuc_centre + rel
            rho = float(rng.uniform(1.3, 2.8)) * max(0.5, min(1.0, nuc_radii[1:].min() / 10.0))
            for _lobe in range(2):
                c_lobe = c_no + rng.uniform(-0.6, 0.6, size=3) * rho
                lbox = _box(c_lobe, np.full(3, rho + 2.0), shape)
                if lbox is None:
                    continue
                z, y, x = _grid(lbox)
                dist = np.sqrt(
                    np.square(z - np.float32(c_lobe[0]))
                    + np.square(y - np.float32(c_lobe[1]))
                    + np.square(x - np.float32(c_lobe[2]))
                )
                blob = np.clip(np.float32(rho + 0.5) - dist, 0.0, 1.0) * np.clip(nucleus[lbox] * 2 - 1, 0.0, 1.0)
                np.maximum(nucleoli[lbox], blob, out=nucleoli[lbox])

    cyto_ok = (sd > 0.8) & (nucleus < 0.05) & (envelope < 0.05)
    cyto_voxels = int(np.count_nonzero(cyto_ok))
    pts = _sample_in_mask(rng, (nucleus > 0.5) & (nucleoli < 0.3), max(1, int(np.count_nonzero(nucleus > 0.5)) // 30))
    chromatin = _splat(shape, pts, rng.uniform(2.0, 6.0, size=len(pts)))

    # mitochondria: ~35 % puncta, the rest tubes of 1.5-6 um
    n_mito = cyto_voxels // 110
    starts = _sample_in_mask(rng, cyto_ok, n_mito)
    lengths = np.where(rng.uniform(size=len(starts)) < 0.35, rng.integers(1, 4, size=len(starts)), 0)
    lengths = np.where(lengths == 0, rng.integers(10, 42, size=len(starts)), lengths)
    mito_pts = _walk(rng, starts, _random_directions(rng, len(starts), 0.5), lengths, cyto_ok, 0.25, 0.6)
    mito = _splat(shape, mito_pts, _LINE_WEIGHT)

    # microtubules: stiff filaments from an MTOC beside the nucleus, wrapping around it, ending at the cortex
    mt_starts, mt_centres = [], []
    nuc_mask = nucleus > 0.3
    for i, cell in enumerate(cells):
        nc, nr = cell.nuc_centre, cell.nuc_radii
        phi = rng.uniform(0, 2 * math.pi)
        lateral = (nr[1:].max() + 2.0) * np.array([math.sin(phi), math.cos(phi)])
        candidates = [
            nc + np.array([0.0, *lateral]),
            nc + np.array([0.0, *-lateral]),
            nc + np.array([nr[0] + 1.5, 0.0, 0.0]),
        ]
        for cand in candidates:
            idx = tuple(np.clip(np.rint(cand).astype(int), 0, np.asarray(shape) - 1))
            if np.all(cand >= 0) and np.all(cand <= np.asarray(shape) - 1) and label[idx] == i and cyto_ok[idx]:
                # a slightly spread origin avoids a single saturated voxel where all filaments meet
                mt_starts.append(cand + rng.uniform(-1.0, 1.0, size=(32, 3)))
                mt_centres.append(np.repeat(nc[None], 32, axis=0))
                break
    if mt_starts:
        s = np.concatenate(mt_starts)
        mt_pts = _walk(
            rng,
            s,
            _random_directions(rng, len(s), 0.4),
            np.full(len(s), 160),
            sd > 1.0,
            0.04,
            0.9,
            slide_around=nuc_mask,
            slide_centres=np.concatenate(mt_centres),
        )
    else:
        mt_pts = np.zeros((0, 3))
    microtubules = _splat(shape, mt_pts, _LINE_WEIGHT)

    # actin: cortical shell just inside the membrane plus straight stress fibres along the cell base
    cortex = _bump(sd - np.float32(1.3), 1.2) * (sd > 0)
    fibre_z = z_sub + 1.0
    fib_starts, fib_dirs = [], []
    base_ok = sd > 0.6
    for cell in cells:
        for _ in range(int(rng.integers(2, 6))):
            off = rng.uniform(-0.5, 0.5, size=2) * cell.radii[1:]
            p = np.array([fibre_z, cell.centre[1] + off[0], cell.centre[2] + off[1]])
            ang = cell.theta + rng.normal(0.0, 0.25)
            d = np.array([0.0, math.sin(ang), math.cos(ang)])
            fib_starts += [p, p]
            fib_dirs += [d, -d]
    if fib_starts:
        fs = np.asarray(fib_starts)
        idx = tuple(np.clip(np.rint(fs).astype(int), 0, np.asarray(shape) - 1).T)
        ok = base_ok[idx] & np.all((fs >= 0) & (fs <= np.asarray(shape) - 1), axis=1)
        fib_pts = _walk(rng, fs[ok], np.asarray(fib_dirs)[ok], np.full(int(ok.sum()), 200), base_ok, 0.0, 1.0)
    else:
        fib_pts = np.zeros((0, 3))
    actin = np.float32(0.6) * cortex + _splat(shape, fib_pts, _LINE_WEIGHT)

    # unlabelled distractors: only visible in transmitted light
    lipid = _splat(shape, _sample_in_mask(rng, cyto_ok, max(1, cyto_voxels // 6000)), 12.0)
    vesicles = _splat(shape, _sample_in_mask(rng, cyto_ok, cyto_voxels // 400), 4.0)

    maps = {
        "cell": cell_map,
        "nucleus": nucleus,
        "envelope": envelope,
        "nucleoli": nucleoli,
        "chromatin": chromatin,
        "membrane": membrane,
        "mito": mito,
        "microtubules": microtubules,
        "actin": actin,
        "cortex": cortex,
        "lipid": lipid,
        "vesicles": vesicles,
    }
    return _Scene(shape=shape, maps=maps)


# --------------------------------------------------------------------------------------------------------------
# image formation
# --------------------------------------------------------------------------------------------------------------


def _structure_density(scene: _Scene, structure: str) -> np.ndarray:
    m = scene.maps
    f32 = np.float32
    if structure == "dna":
        # DNA is excluded from nucleoli; chromatin foci give the texture of a Hoechst/NucBlue stain
        return m["nucleus"] * (f32(1.0) - f32(0.75) * m["nucleoli"]) + f32(0.15) * m["chromatin"]
    if structure == "membrane":
        return m["membrane"] + f32(0.04) * m["cell"]
    if structure == "mitochondria":
        return m["mito"]
    if structure == "microtubules":
        # free tubulin gives a diffuse cytoplasmic background
        return m["microtubules"] + f32(0.3) * m["cell"] * (f32(1.0) - m["nucleus"])
    if structure == "nucleoli":
        return m["nucleoli"] + f32(0.03) * m["nucleus"]
    if structure == "actin":
        return m["actin"] + f32(0.08) * m["cell"]
    raise ValueError(f"unknown structure {structure!r}")  # pragma: no cover - validated by callers


def _zscore(vol: np.ndarray) -> np.ndarray:
    v64 = vol.astype(np.float64)
    mean = float(v64.sum() / v64.size)
    v64 -= mean
    std = math.sqrt(float(np.square(v64).sum() / v64.size))
    if std > 0:
        v64 /= std
    return v64.astype(np.float32)


def _render_fluorescence(scene: _Scene, structure: str, seed: int) -> np.ndarray:
    task = STRUCTURES.index(structure)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_FLUO, task]))
    clean = _gaussian_filter(_structure_density(scene, structure), _FLUO_PSF_SIGMA)
    # a high percentile rather than the max, so that one bright spot (e.g. an MTOC) does not dim the whole image
    peak = float(np.percentile(clean, 99.9))
    if peak > 0:
        clean *= np.float32(1.0 / peak)
    photons = rng.poisson(_FLUO_BACKGROUND + _FLUO_PHOTONS * np.maximum(clean, 0.0).astype(np.float64))
    img = photons + rng.normal(0.0, _FLUO_READ_NOISE, size=photons.shape)
    return _zscore(img)


def _refractive_index(scene: _Scene, exclude: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    n = np.zeros(scene.shape, dtype=np.float32)
    for name, dn in _RI_CONTRAST.items():
        if name not in exclude:
            n += np.float32(dn) * scene.maps[name]
    absorb = np.zeros(scene.shape, dtype=np.float32)
    for name, mu in _ABSORPTION.items():
        if name not in exclude:
            absorb += np.float32(mu) * scene.maps[name]
    return n, absorb


def _render_transmitted_light(scene: _Scene, seed: int, exclude: Sequence[str] = (), noise: bool = True) -> np.ndarray:
    """
    Brightfield image of ``scene``; ``exclude`` drops density maps from the optics and ``noise=False`` returns the
    expected photon counts (not normalised), both only used to check that every structure leaves a trace.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_TL]))
    nz, ny, nx = scene.shape
    n, absorb = _refractive_index(scene, exclude)
    lap = _lateral_laplacian(n)
    sz, sy, sx = _TL_PSF_SIGMA
    # the lateral blur is shared by both terms; only the axial kernel differs (odd = defocus, even = in focus)
    lap_xy = _gaussian_filter(lap, (0.0, sy, sx))
    abs_xy = _gaussian_filter(absorb, (0.0, sy, sx))
    odd = _gaussian_filter(lap_xy, (sz, 0.0, 0.0), derivative_axes=(0,))
    even = _gaussian_filter(np.float32(_TL_GAIN_EVEN) * lap_xy - np.float32(_TL_GAIN_ABS) * abs_xy, (sz, 0.0, 0.0))
    contrast = np.float32(_TL_GAIN_ODD) * odd + even

    # slow illumination: off-centre radial vignetting, a linear tilt and per-slice lamp flicker
    cy, cx = rng.uniform(0.3, 0.7) * ny, rng.uniform(0.3, 0.7) * nx
    yy = (np.arange(ny, dtype=np.float64)[:, None] - cy) / max(ny, nx)
    xx = (np.arange(nx, dtype=np.float64)[None, :] - cx) / max(ny, nx)
    tilt = rng.normal(0.0, 0.05, size=2)
    illum2d = 1.0 - rng.uniform(0.15, 0.35) * (yy * yy + xx * xx) + tilt[0] * yy + tilt[1] * xx
    flicker = 1.0 + rng.normal(0.0, 0.01, size=nz)
    illum = (illum2d[None] * flicker[:, None, None]).astype(np.float32)

    expected = np.float32(_TL_PHOTONS) * illum * (np.float32(1.0) + contrast)
    if not noise:
        return expected
    photons = rng.poisson(np.maximum(expected, 0.0).astype(np.float64))
    img = photons + rng.normal(0.0, _TL_READ_NOISE, size=photons.shape)
    return _zscore(img)


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------


def _check_structure(structure: str) -> str:
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; valid structures are: {', '.join(STRUCTURES)}.")
    return structure


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"shape must be a sequence of three integers (Z, Y, X), got {shape!r}.") from exc
    if len(dims) != 3 or any(d < _MIN_DIM for d in dims):
        raise ValueError(f"shape must be three integers (Z, Y, X), each >= {_MIN_DIM}; got {tuple(shape)!r}.")
    return dims  # type: ignore[return-value]


def _check_seed(seed: int) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.") from exc
    if value < 0 or value != seed:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return value


def make_sample(
    structure: str, seed: int, shape: tuple[int, int, int] = (32, 128, 128)
) -> tuple[np.ndarray, np.ndarray]:
    """
    Generate one synthetic (transmitted light, fluorescence) pair.

    The scene (cells and organelles) depends only on ``seed`` and ``shape``, so every structure drawn with the
    same seed shares the same transmitted-light image; only the fluorescence channel differs.

    Args:
        structure: name of the labelled structure, one of :data:`STRUCTURES`.
        seed: non-negative integer seed; the same arguments always give bit-identical arrays.
        shape: volume shape (Z, Y, X), each dimension at least 8. Voxels are 0.29 um isotropic.

    Returns:
        ``(transmitted_light, fluorescence)``, both float32 arrays of ``shape``, each z-score normalised
        (mean 0, standard deviation 1).

    Raises:
        ValueError: for an unknown structure, a negative or non-integer seed, or an invalid shape.
    """
    _check_structure(structure)
    seed = _check_seed(seed)
    dims = _check_shape(shape)
    scene = _draw_scene(seed, dims)
    return _render_transmitted_light(scene, seed), _render_fluorescence(scene, structure, seed)


def make_sample_all_structures(
    seed: int, shape: tuple[int, int, int] = (32, 128, 128), structures: Sequence[str] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """
    Generate the transmitted-light image of one scene and the fluorescence of several structures in it.

    Useful as a fully labelled reference (e.g. to evaluate a multi-task model on every structure at once). The
    arrays are bit-identical to those of :func:`make_sample` with the same ``seed`` and ``shape``.

    Args:
        seed: non-negative integer seed.
        shape: volume shape (Z, Y, X), each dimension at least 8.
        structures: names to render, default all of :data:`STRUCTURES`.

    Returns:
        ``(transmitted_light, {structure: fluorescence})``, float32, z-score normalised.

    Raises:
        ValueError: for an unknown structure, a negative or non-integer seed, or an invalid shape.
    """
    names = list(STRUCTURES if structures is None else structures)
    for name in names:
        _check_structure(name)
    seed = _check_seed(seed)
    dims = _check_shape(shape)
    scene = _draw_scene(seed, dims)
    return _render_transmitted_light(scene, seed), {s: _render_fluorescence(scene, s, seed) for s in names}


# --------------------------------------------------------------------------------------------------------------
# demo dataset on disk
# --------------------------------------------------------------------------------------------------------------

_KEY_DATASET, _KEY_SPLIT = 3, 4
_DATALIST = "datalist.json"
_IMAGES = "images"


def _generator_args(
    num_per_structure: int, shape: tuple[int, int, int], seed: int, structures: Sequence[str], val_fraction: float
) -> dict:
    # everything that changes the files on disk, in JSON-native types so it compares equal after a round trip
    return {
        "num_per_structure": num_per_structure,
        "shape": list(shape),
        "seed": seed,
        "structures": list(structures),
        "val_fraction": val_fraction,
        "version": GENERATOR_VERSION,
    }


def _is_complete(out_dir: Path, args: dict) -> bool:
    datalist = out_dir / _DATALIST
    try:
        content = json.loads(datalist.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(content, dict) or content.get("generator") != args:
        return False
    items = [*content.get("training", []), *content.get("validation", [])]
    try:
        return all((out_dir / item[key]).is_file() for item in items for key in ("image", "label"))
    except (TypeError, KeyError):
        return False


def _sample_seed(seed: int, task: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, _KEY_DATASET, task, index]).generate_state(1)[0])


def _validation_indices(num: int, val_fraction: float, seed: int, task: int) -> set[int]:
    if num < 2 or val_fraction <= 0:
        # a structure with a single sample keeps it for training
        return set()
    n_val = min(num - 1, max(1, round(val_fraction * num)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_SPLIT, task]))
    return {int(i) for i in rng.permutation(num)[:n_val]}


def _publish(stage: Path, out_dir: Path, args: dict) -> None:
    """Move a fully written dataset from ``stage`` to ``out_dir`` so that no partial state looks complete."""
    try:
        # atomic when out_dir does not exist (or is an empty directory)
        os.rename(stage, out_dir)
        return
    except OSError:
        pass
    if _is_complete(out_dir, args):
        # a concurrent run published the same dataset first
        return
    # out_dir may hold unrelated files, so only our two entries are swapped; the datalist goes first and comes back
    # last, so an interruption in between leaves no datalist and the next call regenerates
    (out_dir / _DATALIST).unlink(missing_ok=True)
    old = out_dir / _IMAGES
    trash = None
    if old.exists() or old.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rename(old, trash / _IMAGES)
    os.rename(stage / _IMAGES, out_dir / _IMAGES)
    os.replace(stage / _DATALIST, out_dir / _DATALIST)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def generate_demo_dataset(
    out_dir: str | os.PathLike,
    num_per_structure: int = 8,
    shape: tuple[int, int, int] = (40, 128, 128),
    seed: int = 0,
    structures: Sequence[str] | None = None,
    val_fraction: float = 0.25,
) -> Path:
    """
    Write a synthetic partially labelled dataset of OME-TIFF pairs and a MONAI-style datalist.

    For every structure ``s`` and index ``k`` two volumes are written,
    ``<out_dir>/images/<s>_<k:03d>_signal.ome.tif`` (transmitted light, channel "brightfield") and
    ``<out_dir>/images/<s>_<k:03d>_target.ome.tif`` (fluorescence, channel ``s``), together with
    ``<out_dir>/datalist.json``::

        {"training": [{"image": "images/dna_000_signal.ome.tif", "label": "images/dna_000_target.ome.tif",
                       "structure": "dna", "task": 0}, ...],
         "validation": [...], "structures": [...], "spacing_zyx_um": [0.29, 0.29, 0.29], "generator": {...}}

    Paths are relative to ``out_dir``; ``task`` is the index of the structure in :data:`STRUCTURES` (also when
    only a subset is generated). The split is stratified per structure and deterministic. Every sample uses its
    own scene, seeded from ``(seed, task, k)``.

    The call is idempotent and cheap when nothing changed: if ``datalist.json`` exists with the same generator
    arguments (and all its files exist) nothing is written. Otherwise the dataset is generated in a temporary
    directory next to ``out_dir`` and moved into place, so an interrupted run never leaves a partial dataset
    that looks complete. Other files in ``out_dir`` are left alone.

    Args:
        out_dir: destination directory, created if needed.
        num_per_structure: number of samples per structure (>= 1).
        shape: volume shape (Z, Y, X), each dimension at least 8.
        seed: non-negative base seed.
        structures: structures to include, default all of :data:`STRUCTURES`.
        val_fraction: fraction of each structure's samples put in "validation", in [0, 1). At least one sample
            per structure goes to validation when the fraction is positive and the structure has two or more
            samples.

    Returns:
        Path of ``datalist.json``.

    Raises:
        ValueError: for invalid arguments (unknown or duplicate structures, bad shape, seed or fractions).
    """
    names = list(STRUCTURES if structures is None else structures)
    if isinstance(structures, str):
        raise ValueError(f"structures must be a sequence of names, not the string {structures!r}.")
    if not names:
        raise ValueError("structures must not be empty.")
    for name in names:
        _check_structure(name)
    if len(set(names)) != len(names):
        raise ValueError(f"structures contains duplicates: {names}.")
    if isinstance(num_per_structure, bool) or int(num_per_structure) != num_per_structure or num_per_structure < 1:
        raise ValueError(f"num_per_structure must be a positive integer, got {num_per_structure!r}.")
    num = int(num_per_structure)
    val = float(val_fraction)
    if not 0.0 <= val < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    dims = _check_shape(shape)
    seed = _check_seed(seed)

    out = Path(out_dir).expanduser().absolute()
    args = _generator_args(num, dims, seed, names, val)
    datalist_path = out / _DATALIST
    if _is_complete(out, args):
        return datalist_path

    # imported here: sparsessp_monai.io pulls in MONAI (seconds), which the no-op path above should not pay for
    from sparsessp_monai.io import write_ome_tiff

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        # a plain mkdir (not the 0700 mkdtemp dir itself) so the published directory gets the usual permissions
        stage = tmp_root / out.name
        (stage / _IMAGES).mkdir(parents=True)
        training: list[dict] = []
        validation: list[dict] = []
        for name in names:
            task = STRUCTURES.index(name)
            val_idx = _validation_indices(num, val, seed, task)
            for k in range(num):
                signal, target = make_sample(name, _sample_seed(seed, task, k), dims)
                image_rel = f"{_IMAGES}/{name}_{k:03d}_signal.ome.tif"
                label_rel = f"{_IMAGES}/{name}_{k:03d}_target.ome.tif"
                write_ome_tiff(stage / image_rel, signal, spacing_zyx=SPACING_ZYX_UM, channel_names=["brightfield"])
                write_ome_tiff(stage / label_rel, target, spacing_zyx=SPACING_ZYX_UM, channel_names=[name])
                item = {"image": image_rel, "label": label_rel, "structure": name, "task": task}
                (validation if k in val_idx else training).append(item)
        content = {
            "training": training,
            "validation": validation,
            "structures": names,
            "spacing_zyx_um": list(SPACING_ZYX_UM),
            "generator": args,
        }
        (stage / _DATALIST).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        _publish(stage, out, args)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return datalist_path


def main(argv: Sequence[str] | None = None) -> int:
    """
    Command line entry point: ``python -m sparsessp_monai.data.synthetic_cells --out DIR [options]``.

    Args:
        argv: arguments without the program name, default ``sys.argv[1:]``.

    Returns:
        Process exit status (0 on success; invalid arguments exit with status 2 through argparse).
    """
    parser = argparse.ArgumentParser(
        prog="python -m sparsessp_monai.data.synthetic_cells",
        description="Generate the synthetic SparseSSP demo dataset (transmitted light -> fluorescence OME-TIFFs).",
    )
    parser.add_argument("--out", required=True, help="output directory (datalist.json and images/)")
    parser.add_argument("--num-per-structure", type=int, default=8, help="samples per structure (default 8)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[40, 128, 128], metavar=("D", "H", "W"), help="volume shape Z Y X"
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--structures", nargs="+", choices=STRUCTURES, default=None, help="default: all")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="validation fraction per structure")
    ns = parser.parse_args(argv)
    try:
        path = generate_demo_dataset(
            ns.out,
            num_per_structure=ns.num_per_structure,
            shape=tuple(ns.shape),
            seed=ns.seed,
            structures=ns.structures,
            val_fraction=ns.val_fraction,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
