"""
PNG previews of 3D volumes (orthogonal maximum-intensity projections).

The previews are laid out with numpy and encoded with Pillow; files are written with
:func:`sparsessp_monai.io.publish.atomic_write`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .publish import atomic_write

__all__ = ["orthogonal_mips", "save_projection_preview", "write_png"]

# samples per pixel accepted by write_png: gray, gray+alpha, RGB, RGBA (Pillow modes L, LA, RGB, RGBA)
_SAMPLES = (1, 2, 3, 4)

# layout of the preview (pixels / RGB colours)
_INNER_GAP = 2  # between the XY, XZ and YZ views of one panel
_PANEL_GAP = 6  # between panels
_INNER_COLOR = (90, 90, 90)
_PANEL_COLOR = (255, 255, 255)
_BACKGROUND = (0, 0, 0)
_MAX_AXIS = 4096  # cap on an axis after spacing-aware stretching, so a bad spacing cannot explode memory


def write_png(path: str | os.PathLike, rgb_or_gray_uint8: np.ndarray) -> Path:
    """
    Write an 8-bit image as PNG (encoded with Pillow); the file is replaced atomically.

    Args:
        path: destination file name (parent folders are created).
        rgb_or_gray_uint8: ``uint8`` array of shape (H, W) (gray), (H, W, 1), (H, W, 2) (gray + alpha),
            (H, W, 3) (RGB) or (H, W, 4) (RGBA).

    Returns:
        The destination path.

    Raises:
        ValueError: when the array is not uint8, has an unsupported shape or is empty.
    """
    img = np.asarray(rgb_or_gray_uint8)
    if img.dtype != np.uint8:
        raise ValueError(f"write_png expects a uint8 array, got {img.dtype}.")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in _SAMPLES or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"write_png expects a non-empty (H, W) or (H, W, 1|2|3|4) array, got shape {img.shape}.")
    # Pillow infers the mode from the shape: (H, W) -> L, (H, W, 2|3|4) -> LA / RGB / RGBA
    image = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if img.shape[2] == 1 else img))
    # format is explicit because the temporary file's name does not end in .png
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _as_volume(volume: Any, title: str) -> np.ndarray:
    """A finite float (Z, Y, X) array from a numpy array or (CPU/GPU) tensor; a leading singleton axis is dropped."""
    if hasattr(volume, "detach"):  # torch tensors, including MetaTensor, possibly on a GPU
        volume = volume.detach().cpu().numpy()
    arr = np.asarray(volume)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]  # channel-first single-channel data as produced by MONAI
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"panel {title!r}: expected a non-empty 3D (Z, Y, X) volume, got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"panel {title!r}: expected real numeric data, got dtype {arr.dtype}.")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"panel {title!r}: the volume contains NaN or infinite values.")
    return arr


def _stretch(img: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Nearest-neighbour resize of one axis by ``factor`` (display only, so no interpolation is needed)."""
    if factor == 1.0:
        return img
    n = img.shape[axis]
    new_n = int(min(max(1, round(n * factor)), _MAX_AXIS))
    index = np.minimum((np.arange(new_n) * n / new_n).astype(np.int64), n - 1)
    return np.take(img, index, axis=axis)


def orthogonal_mips(
    volume: np.ndarray, spacing_zyx: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Maximum-intensity projections of a (Z, Y, X) volume along each axis, stretched to the physical aspect ratio.

    Args:
        volume: (Z, Y, X) array (or (1, Z, Y, X)).
        spacing_zyx: voxel size (sz, sy, sx); when given, axes are stretched (nearest neighbour) so that one
            display pixel covers ``min(sy, sx)`` in every direction, e.g. Z is repeated by ``sz / sx``.

    Returns:
        ``(xy, xz, yz)``: the XY view (Y rows, X columns), the XZ view (Z rows, X columns) and the YZ view
        (Y rows, Z columns), as float32 arrays laid out like Fiji's orthogonal views.

    Raises:
        ValueError: on a non-3D or non-finite volume or an invalid spacing.
    """
    vol = _as_volume(volume, "volume")
    xy = vol.max(axis=0)  # (Y, X)
    xz = vol.max(axis=1)  # (Z, X)
    yz = vol.max(axis=2).T  # (Y, Z): Z runs horizontally so the view sits right of XY sharing its Y axis
    if spacing_zyx is not None:
        spacing = [float(s) for s in spacing_zyx]
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing_zyx must be three positive finite numbers, got {spacing_zyx!r}.")
        sz, sy, sx = spacing
        ref = min(sy, sx)
        fz, fy, fx = sz / ref, sy / ref, sx / ref
        xy = _stretch(_stretch(xy, 0, fy), 1, fx)
        xz = _stretch(_stretch(xz, 0, fz), 1, fx)
        yz = _stretch(_stretch(yz, 0, fy), 1, fz)
    return xy, xz, yz


def _to_uint8(views: Sequence[np.ndarray], low: float = 1.0, high: float = 99.8) -> list[np.ndarray]:
    """Scale views to 0..255 with percentiles computed over all of them (one contrast per panel)."""
    values = np.concatenate([v.ravel() for v in views])
    lo, hi = (float(p) for p in np.percentile(values, [low, high]))
    if hi <= lo:
        # e.g. a few bright spots on an empty background: the percentiles coincide, so fall back to the full range
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        # constant panel: black if empty, mid-gray otherwise, rather than dividing by zero
        return [np.full(v.shape, 128 if lo != 0 else 0, dtype=np.uint8) for v in views]
    return [(np.clip((v - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8) for v in views]


def _render_panel(volume: np.ndarray, spacing_zyx: Sequence[float] | None) -> np.ndarray:
    xy, xz, yz = _to_uint8(orthogonal_mips(volume, spacing_zyx))
    ny, nx = xy.shape
    nz = xz.shape[0]
    canvas = np.empty((ny + _INNER_GAP + nz, nx + _INNER_GAP + nz, 3), dtype=np.uint8)
    canvas[:] = _INNER_COLOR
    canvas[ny + _INNER_GAP :, nx + _INNER_GAP :] = _BACKGROUND  # the unused bottom-right corner
    canvas[:ny, :nx] = xy[..., None]
    canvas[ny + _INNER_GAP :, :nx] = xz[..., None]
    canvas[:ny, nx + _INNER_GAP :] = yz[..., None]
    return canvas


def save_projection_preview(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, np.ndarray]],
    spacing_zyx: Sequence[float] | None = None,
) -> Path:
    """
    Save a PNG with orthogonal maximum-intensity projections of one or more volumes side by side.

    Each panel shows its volume like Fiji's orthogonal view: the XY projection top-left, the XZ projection below
    it and the YZ projection to its right (Z growing downwards / rightwards), separated by a thin gray line.
    Panels are placed left to right **in the order given** (e.g. input | prediction | target), separated by a
    white bar and top-aligned when their sizes differ. Every panel is contrast-stretched on its own from its 1st
    to its 99.8th percentile (over its three projections). Titles are not drawn (no font dependency); keep the
    order in the file name or caption.

    Args:
        path: destination PNG file (written atomically; parent folders are created).
        panels: sequence of ``(title, volume)`` with volume of shape (Z, Y, X) (or (1, Z, Y, X)); numpy arrays
            or torch tensors.
        spacing_zyx: optional voxel size (sz, sy, sx) shared by all panels, used to stretch Z (and Y/X if
            anisotropic) to the physical aspect ratio. Entries of None mean unknown and disable the stretching.

    Returns:
        The destination path.

    Raises:
        ValueError: when there are no panels, a title is not a string, a volume is not 3D or not finite, or the
            spacing is invalid.
    """
    if not panels:
        raise ValueError("save_projection_preview needs at least one (title, volume) panel.")
    spacing = None if spacing_zyx is None or any(s is None for s in spacing_zyx) else spacing_zyx
    rendered = []
    for item in panels:
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str):
            raise ValueError(f"each panel must be a (title: str, volume) pair, got {type(item).__name__}.")
        title, volume = item
        rendered.append(_render_panel(_as_volume(volume, title), spacing))
    height = max(r.shape[0] for r in rendered)
    width = sum(r.shape[1] for r in rendered) + _PANEL_GAP * (len(rendered) - 1)
    sheet = np.empty((height, width, 3), dtype=np.uint8)
    sheet[:] = _BACKGROUND
    x0 = 0
    for i, panel in enumerate(rendered):
        if i:
            sheet[:, x0 : x0 + _PANEL_GAP] = _PANEL_COLOR
            x0 += _PANEL_GAP
        sheet[: panel.shape[0], x0 : x0 + panel.shape[1]] = panel
        x0 += panel.shape[1]
    return write_png(path, sheet)
