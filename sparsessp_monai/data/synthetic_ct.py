"""
Deterministic synthetic thin-slice CT phantoms (lower thorax / upper abdomen) for demos and tests of sparse-slice
to thin-slice reconstruction, written as NIfTI in a non-trivial storage orientation.

Anatomy (HU values typical of contrast-enhanced CT): air outside an elliptic body (-1000); subcutaneous fat
(-100) around a muscle wall (50) and soft tissue (40); two lungs (-850) whose bases follow a domed diaphragm, with
oblique vessels (40); a contrast-filled heart (45, chambers 250) in the upper slices; liver (60) and stomach (35,
with an air pocket) below the diaphragm; aorta (200); a spine of vertebral bodies (cancellous 250 HU, cortex 700)
separated by discs (90) every ~28 mm, with a spinal canal (20) and posterior arches; obliquely running ribs (700)
that appear and disappear along z. Every boundary has a ~1 voxel partial-volume ramp, the body outline and organ
sizes vary smoothly along z, and white noise (``noise_hu``) is added. Slices are thin (1 mm by default).

Storage: the array is built with axes (left, posterior, superior) and reordered to ``axcodes`` (default ``"LIP"``:
the axial axis in the middle and flipped, so that readers must use the affine to find it); the affine is exact,
so every orientation describes the same world-space volume.

All randomness comes from ``numpy.random.Generator`` seeded from ``seed``; the same arguments give the same volume.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CT_GENERATOR_VERSION", "generate_ct_dataset", "main", "make_ct_phantom", "phantom_affine", "save_nifti"]

CT_GENERATOR_VERSION = 1
"""Bumped whenever the phantom model changes, so cached datasets are regenerated."""


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy of a region from an approximate signed distance ``d`` (mm, negative inside)."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _ellipse_dist(x: np.ndarray, y: np.ndarray, cx: Any, cy: Any, ax: Any, ay: Any) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipse (exact on circles)."""
    q = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return (q - 1.0) * np.minimum(ax, ay)


def make_ct_phantom(
    seed: int = 0,
    shape: Sequence[int] = (96, 80, 96),
    spacing: Sequence[float] = (3.0, 3.0, 1.0),
    noise_hu: float = 12.0,
) -> np.ndarray:
    """One phantom in HU, float32, axes (left, posterior, superior) = (x, y, z).

    Args:
        seed: random seed (anatomy variation, vessels, noise).
        shape: voxels along left-right, anterior-posterior and inferior-superior.
        spacing: voxel size in mm along the same axes.
        noise_hu: standard deviation of the white noise.

    Raises:
        ValueError: a shape below 8 voxels or a non-positive spacing.
    """
    nx, ny, nz = (int(s) for s in shape)
    sx, sy, sz = (float(s) for s in spacing)
    if min(nx, ny, nz) < 8 or min(sx, sy, sz) <= 0:
        raise ValueError(f"shape must be >= 8 voxels per axis and spacing positive, got {shape}, {spacing}.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    x = ((np.arange(nx) - (nx - 1) / 2) * sx)[:, None, None]  # + = patient left
    y = ((np.arange(ny) - (ny - 1) / 2) * sy)[None, :, None]  # + = posterior
    z = (np.arange(nz) * sz)[None, None, :]  # + = superior
    t = z / max(nz * sz, 1.0)
    pv = 0.5 * min(sx, sy)  # partial-volume ramp of about one in-plane voxel

    # body outline: semi-axes filling ~85% of the field of view, breathing slowly along z
    a = 0.42 * nx * sx * (1 + 0.04 * rng.uniform(-1, 1)) * (1 + 0.05 * np.sin(2 * np.pi * t + rng.uniform(0, 6.3)))
    b = 0.40 * ny * sy * (1 + 0.04 * rng.uniform(-1, 1)) * (1 + 0.04 * np.cos(2 * np.pi * 0.7 * t))
    hu = np.full((nx, ny, nz), -1000.0)

    def paint(occupancy: np.ndarray, value: float) -> None:
        np.copyto(hu, hu * (1 - occupancy) + value * occupancy)

    body = _ramp(_ellipse_dist(x, y, 0, 0, a, b), pv)
    paint(body, -100.0)
    fat = 6.0 + 4.0 * rng.uniform()
    paint(_ramp(_ellipse_dist(x, y, 0, 0, a - fat, b - fat), pv), 50.0)
    paint(_ramp(_ellipse_dist(x, y, 0, 0, a - fat - 8, b - fat - 8), pv), 40.0)

    # diaphragm dome: lungs above it, abdomen below; its height varies across the plane (oblique boundaries)
    dome0 = nz * sz * rng.uniform(0.35, 0.45)
    rr = (x / a) ** 2 + ((y + 0.1 * b) / b) ** 2
    dome = dome0 + 0.25 * nz * sz * (1 - np.clip(rr, 0, 1)) + 4.0 * np.sign(-x)  # right dome a little higher
    above = _ramp(dome - z, 1.5 * sz)
    for side in (-1, 1):
        lung = _ramp(_ellipse_dist(x, y, side * 0.45 * a, 0.02 * b, 0.33 * a, 0.62 * b), pv) * above
        paint(lung, -850.0)
        # vessels: oblique tubes inside the lung
        for _ in range(10):
            cx0, cy0 = side * 0.45 * a + rng.uniform(-0.22, 0.22) * a, rng.uniform(-0.45, 0.45) * b
            vx, vy = rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25)
            r = rng.uniform(1.5, 4.0)
            zc = z - nz * sz / 2
            paint(_ramp(_ellipse_dist(x, y, cx0 + vx * zc, cy0 + vy * zc, r, r), pv) * lung, 40.0)

    # heart with contrast chambers, upper slices only
    heart_on = _ramp(dome0 + 0.35 * nz * sz - z, 4.0)
    heart = _ramp(_ellipse_dist(x, y, 0.12 * a, -0.35 * b, 0.32 * a, 0.35 * b), pv) * heart_on
    paint(heart, 45.0)
    paint(_ramp(_ellipse_dist(x, y, 0.18 * a, -0.38 * b, 0.14 * a, 0.16 * b), pv) * heart_on, 250.0)

    # abdomen below the dome: liver (right), stomach (left) with an air pocket
    below = 1 - above
    paint(_ramp(_ellipse_dist(x, y, -0.35 * a, 0.0, 0.5 * a, 0.62 * b), pv) * below * body, 60.0)
    paint(_ramp(_ellipse_dist(x, y, 0.4 * a, -0.2 * b, 0.25 * a, 0.28 * b), pv) * below * body, 35.0)
    paint(_ramp(_ellipse_dist(x, y, 0.4 * a, -0.4 * b, 0.12 * a, 0.06 * b), pv) * below * body, -900.0)

    # spine: vertebral bodies and discs along z, aorta in front, canal and arch behind
    spine_y = 0.58 * b
    period, disc = 28.0 * rng.uniform(0.9, 1.1), 6.0
    phase = np.mod(z + rng.uniform(0, period), period)
    in_disc = _ramp(np.abs(phase - period / 2) - disc / 2, 1.5 * sz)  # 1 inside a disc
    vert = _ramp(_ellipse_dist(x, y, 0, spine_y, 16.0, 14.0), pv)
    paint(vert, 700.0)
    paint(_ramp(_ellipse_dist(x, y, 0, spine_y, 13.5, 11.5), pv), 250.0)
    paint(vert * in_disc, 90.0)
    arch = _ramp(_ellipse_dist(x, y, 0, spine_y + 24.0, 12.0, 10.0), pv) * (1 - in_disc)
    paint(arch, 600.0)
    paint(_ramp(_ellipse_dist(x, y, 0, spine_y + 24.0, 7.0, 6.0), pv), 20.0)
    paint(_ramp(_ellipse_dist(x, y, 0.15 * a, spine_y - 26.0, 11.0, 11.0), pv), 200.0)

    # ribs: cross-sections on the inner body wall that come and go obliquely along z
    for k in range(14):
        theta = np.pi * (0.15 + 0.7 * (k % 7) / 6) * (1 if k < 7 else -1) + np.pi / 2
        cx, cy = 0.9 * (a - fat) * np.cos(theta), 0.9 * (b - fat) * np.sin(theta)
        on = _ramp(-np.sin(2 * np.pi * z / 24.0 + 0.9 * k + rng.uniform(0, 0.5)) + 0.55, 0.2)
        paint(_ramp(_ellipse_dist(x, y, cx, cy, 5.0, 4.0), pv) * on, 700.0)

    hu += rng.normal(0.0, float(noise_hu), size=hu.shape)
    return hu.astype(np.float32)


def phantom_affine(
    shape: Sequence[int], spacing: Sequence[float], axcodes: str = "LIP", origin: Sequence[float] = (0.0, 0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Orientation change of a (left, posterior, superior) array to ``axcodes`` storage, and its RAS affine.

    Returns:
        ``(ornt, affine)``: the nibabel orientation transform to apply to the array, and the 4x4 affine of the
        reoriented array.
    """
    import nibabel as nib

    sx, sy, sz = (float(s) for s in spacing)
    # (left, posterior, superior) indices -> RAS mm: x_R = -i*sx, y_A = -j*sy, z_S = k*sz
    base = np.diag([-sx, -sy, sz, 1.0])
    base[:3, 3] = origin
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("L", "P", "S")), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    affine = base @ nib.orientations.inv_ornt_aff(ornt, tuple(int(s) for s in shape))
    return ornt, affine


def _write_nifti(img: Any, path: Path, gz: bool) -> None:
    # the bytes nib.save writes (gzip without a file name or time stamp, nibabel's level 1), but to a file of any
    # name: nib.save picks the format from the name, which atomic_write's temporary file does not have
    with open(path, "wb") as f:
        if not gz:
            img.to_stream(f)
            return
        with gzip.GzipFile("", "wb", compresslevel=1, fileobj=f, mtime=0) as z:
            img.to_stream(z)


def save_nifti(path: str | os.PathLike, hu_lps: np.ndarray, spacing: Sequence[float], axcodes: str = "LIP") -> str:
    """Write a (left, posterior, superior) HU array as NIfTI stored in ``axcodes`` order with the exact affine.

    The file (``.nii`` or ``.nii.gz``, by its name) is written atomically (:func:`sparsessp_monai.io.atomic_write`).

    Returns:
        ``path`` as a string.
    """
    import nibabel as nib

    from sparsessp_monai.io import atomic_write

    ornt, affine = phantom_affine(hu_lps.shape, spacing, axcodes, origin=(150.0, 120.0, -60.0))
    data = nib.orientations.apply_orientation(hu_lps, ornt).astype(np.float32)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_xyzt_units("mm")
    gz = os.fspath(path).lower().endswith(".gz")
    atomic_write(path, lambda tmp: _write_nifti(img, tmp, gz))
    return str(path)


def generate_ct_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 6,
    num_val: int = 2,
    shape: Sequence[int] = (96, 80, 96),
    spacing: Sequence[float] = (3.0, 3.0, 1.0),
    seed: int = 0,
    axcodes: str = "LIP",
    noise_hu: float = 12.0,
) -> str:
    """Write phantoms ``ct_000.nii.gz, ...`` and a Decathlon ``datalist.json`` (``training`` / ``validation``
    lists of ``{"image": file}``) to ``out_dir``; a dataset already published there with the same parameters is
    reused (:func:`sparsessp_monai.io.is_complete`). The files are written into a staging folder and published at
    the end (:func:`sparsessp_monai.io.staged_folder`; other files in ``out_dir`` are left alone), so an
    interrupted run leaves nothing behind.

    Returns:
        the path of ``datalist.json``.
    """
    from sparsessp_monai.io import atomic_write_text, is_complete, staged_folder

    out = Path(out_dir)
    params = {
        "version": CT_GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "shape": [int(s) for s in shape],
        "spacing": [float(s) for s in spacing],
        "seed": int(seed),
        "axcodes": str(axcodes),
        "noise_hu": float(noise_hu),
    }
    datalist_file = out / "datalist.json"
    if is_complete(out, params):
        return str(datalist_file)
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one training and one validation phantom, got {num_train}, {num_val}.")
    with staged_folder(out, params) as staging:
        items = []
        for i in range(num_train + num_val):
            name = f"ct_{i:03d}.nii.gz"
            save_nifti(staging / name, make_ct_phantom(seed * 1000 + i, shape, spacing, noise_hu), spacing, axcodes)
            items.append({"image": name})
        datalist = {"training": items[:num_train], "validation": items[num_train:]}
        atomic_write_text(staging / "datalist.json", json.dumps(datalist, indent=2))
    return str(datalist_file)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m sparsessp_monai.data.synthetic_ct --out DIR``: write a phantom dataset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num_train", type=int, default=6)
    parser.add_argument("--num_val", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 80, 96), help="voxels (LR, AP, SI)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 3.0, 1.0), help="mm (LR, AP, SI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--axcodes", default="LIP", help="storage orientation, e.g. LIP, LPS, RAS")
    args = parser.parse_args(argv)
    path = generate_ct_dataset(
        args.out, args.num_train, args.num_val, args.shape, args.spacing, args.seed, args.axcodes
    )
    print(path)


if __name__ == "__main__":
    main()
