"""
Image formation of the synthetic cell samples: the fluorescence of one labelled structure and the
transmitted-light (brightfield) image of a :class:`~sparsessp_monai.data.cell_scene.Scene`.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cell_scene import Scene
from .filters import gaussian_filter, lateral_laplacian, zscore_volume

__all__ = [
    "ABSORPTION",
    "RI_CONTRAST",
    "STRUCTURES",
    "STRUCTURE_MAPS",
    "refractive_index",
    "render_fluorescence",
    "render_transmitted_light",
    "structure_density",
]

STRUCTURES: tuple[str, ...] = ("dna", "membrane", "mitochondria", "microtubules", "nucleoli", "actin")
"""Structure names; the index of a name is its task id."""

# SeedSequence keys of the noise streams; cell_scene uses 0, synthetic_cells 3 and 4 (independent streams)
_KEY_TL, _KEY_FLUO = 1, 2

_FLUO_PSF_SIGMA = (1.4, 0.9, 0.9)
_TL_PSF_SIGMA = (3.0, 1.2, 1.2)

RI_CONTRAST: dict[str, float] = {
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
"""Refractive-index contrast (relative to the medium) of each scene density map. Membranes are thin so they need
a large dn to be visible; deposit maps are in "line density" units (see ``cell_scene.LINE_WEIGHT``)."""

STRUCTURE_MAPS: dict[str, tuple[str, ...]] = {
    "dna": ("nucleus", "chromatin"),
    "membrane": ("membrane",),
    "mitochondria": ("mito",),
    "microtubules": ("microtubules",),
    "nucleoli": ("nucleoli",),
    "actin": ("actin",),
}
"""Scene density maps that make up each labelled structure (for ablations of the transmitted-light optics)."""

ABSORPTION: dict[str, float] = {"nucleoli": 0.3, "mito": 0.1, "lipid": 0.6, "chromatin": 0.05}
"""Absorption coefficient of the dense scene maps in transmitted light."""

# contrast gains of the TL terms: defocus (odd axial kernel) dominates, in-focus phase and absorption are weaker
_TL_GAIN_ODD = 70.0
_TL_GAIN_EVEN = 12.0
_TL_GAIN_ABS = 0.8
_TL_PHOTONS = 4000.0
_TL_READ_NOISE = 6.0
_FLUO_PHOTONS = 400.0
_FLUO_BACKGROUND = 20.0
_FLUO_READ_NOISE = 2.0


def structure_density(scene: Scene, structure: str) -> np.ndarray:
    """The fluorophore density (Z, Y, X) float32 of one of :data:`STRUCTURES` in ``scene``, before the PSF."""
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


def render_fluorescence(scene: Scene, structure: str, seed: int) -> np.ndarray:
    """The noisy fluorescence image (Z, Y, X) float32, z-score normalised, of ``structure`` in ``scene``."""
    task = STRUCTURES.index(structure)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_FLUO, task]))
    clean = gaussian_filter(structure_density(scene, structure), _FLUO_PSF_SIGMA)
    # a high percentile rather than the max, so that one bright spot (e.g. an MTOC) does not dim the whole image
    peak = float(np.percentile(clean, 99.9))
    if peak > 0:
        clean *= np.float32(1.0 / peak)
    photons = rng.poisson(_FLUO_BACKGROUND + _FLUO_PHOTONS * np.maximum(clean, 0.0).astype(np.float64))
    img = photons + rng.normal(0.0, _FLUO_READ_NOISE, size=photons.shape)
    return zscore_volume(img)


def refractive_index(scene: Scene, exclude: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Refractive-index contrast and absorption maps (Z, Y, X) float32 of ``scene``, without the ``exclude`` maps."""
    n = np.zeros(scene.shape, dtype=np.float32)
    for name, dn in RI_CONTRAST.items():
        if name not in exclude:
            n += np.float32(dn) * scene.maps[name]
    absorb = np.zeros(scene.shape, dtype=np.float32)
    for name, mu in ABSORPTION.items():
        if name not in exclude:
            absorb += np.float32(mu) * scene.maps[name]
    return n, absorb


def _illumination(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    # slow illumination: off-centre radial vignetting, a linear tilt and per-slice lamp flicker
    nz, ny, nx = shape
    cy, cx = rng.uniform(0.3, 0.7) * ny, rng.uniform(0.3, 0.7) * nx
    yy = (np.arange(ny, dtype=np.float64)[:, None] - cy) / max(ny, nx)
    xx = (np.arange(nx, dtype=np.float64)[None, :] - cx) / max(ny, nx)
    tilt = rng.normal(0.0, 0.05, size=2)
    illum2d = 1.0 - rng.uniform(0.15, 0.35) * (yy * yy + xx * xx) + tilt[0] * yy + tilt[1] * xx
    flicker = 1.0 + rng.normal(0.0, 0.01, size=nz)
    return (illum2d[None] * flicker[:, None, None]).astype(np.float32)


def render_transmitted_light(scene: Scene, seed: int, exclude: Sequence[str] = (), noise: bool = True) -> np.ndarray:
    """
    Brightfield image (Z, Y, X) float32 of ``scene``, z-score normalised.

    ``exclude`` drops density maps from the optics and ``noise=False`` returns the expected photon counts (not
    normalised), both only used to check that every structure leaves a trace.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_TL]))
    n, absorb = refractive_index(scene, exclude)
    lap = lateral_laplacian(n)
    sz, sy, sx = _TL_PSF_SIGMA
    # the lateral blur is shared by both terms; only the axial kernel differs (odd = defocus, even = in focus)
    lap_xy = gaussian_filter(lap, (0.0, sy, sx))
    abs_xy = gaussian_filter(absorb, (0.0, sy, sx))
    odd = gaussian_filter(lap_xy, (sz, 0.0, 0.0), derivative_axes=(0,))
    even = gaussian_filter(np.float32(_TL_GAIN_EVEN) * lap_xy - np.float32(_TL_GAIN_ABS) * abs_xy, (sz, 0.0, 0.0))
    contrast = np.float32(_TL_GAIN_ODD) * odd + even
    illum = _illumination(rng, scene.shape)
    expected = np.float32(_TL_PHOTONS) * illum * (np.float32(1.0) + contrast)
    if not noise:
        return expected
    photons = rng.poisson(np.maximum(expected, 0.0).astype(np.float64))
    img = photons + rng.normal(0.0, _TL_READ_NOISE, size=photons.shape)
    return zscore_volume(img)
