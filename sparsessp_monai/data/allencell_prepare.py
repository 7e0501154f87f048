"""
Reading, normalising, resampling and writing AllenCell images for the prepared SparseSSP layout.

Every image is read (CZI through the optional ``bioio`` extra, TIFF/OME-TIFF through tifffile), its
transmitted-light (signal) and fluorescence (target) channels are z-scored per image (:func:`zscore`), resampled
in XY with anti-aliasing, Z unchanged (:func:`resample_xy`), and written by :func:`write_prepared_dataset` as
OME-TIFF with ``PhysicalSizeX/Y/Z``, with a Decathlon datalist JSON (``training`` / ``validation`` / ``test``,
items ``{image, label, structure}`` relative to the output folder) and a ``manifest.csv`` with the provenance of
every file. The folder is written in a staging folder and published at the end (:mod:`sparsessp_monai.io.publish`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .allencell_csv import SPLITS, TARGET_XY_UM

__all__ = [
    "READABLE_SUFFIXES",
    "check_output_dir",
    "file_stem",
    "read_channels",
    "resample_xy",
    "write_prepared_dataset",
    "zscore",
]

READABLE_SUFFIXES: tuple[str, ...] = (".czi", ".ome.tif", ".ome.tiff", ".tif", ".tiff")
"""Image file name endings :func:`read_channels` reads."""


def _suffix(path: Path) -> str:
    lower = path.name.lower()
    return next((s for s in READABLE_SUFFIXES if lower.endswith(s)), "")


def _read_czi(path: Path, channels: Sequence[int]) -> tuple[list[np.ndarray], list[float | None]]:
    from sparsessp_monai.io.czi import read_czi  # the package's one CZI reader (the optional 'czi' extra)

    data, meta = read_czi(path)
    bad = [c for c in channels if c >= data.shape[0]]
    if bad:
        raise ValueError(f"{path}: channel(s) {bad} requested but the file has {data.shape[0]} channel(s).")
    return [data[int(c)] for c in channels], list(meta["spacing_zyx"])


def read_channels(path: str | os.PathLike, channels: Sequence[int]) -> tuple[list[np.ndarray], list[float | None]]:
    """Read channels of a CZI / TIFF / OME-TIFF file as (Z, Y, X) arrays with the file's voxel size.

    Args:
        path: image file.
        channels: channel indices to read.

    Returns:
        ``(volumes, spacing_zyx)``: one array per requested channel and the voxel size (sz, sy, sx) in
        micrometres, None where the file does not say.

    Raises:
        ValueError: missing or unreadable file, unsupported format, channel out of range, CZI without the extra.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image file {str(p)!r} does not exist.")
    kind = _suffix(p)
    if kind == ".czi":
        return _read_czi(p, channels)
    if not kind:
        raise ValueError(f"{p}: unsupported format; expected one of {', '.join(READABLE_SUFFIXES)}.")
    from sparsessp_monai.io import read_ome_tiff

    data, meta = read_ome_tiff(p)
    bad = [c for c in channels if c >= data.shape[0]]
    if bad:
        raise ValueError(f"{p}: channel(s) {bad} requested but the file has {data.shape[0]} channel(s).")
    return [data[c] for c in channels], list(meta["spacing_zyx"])


def zscore(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    """Per-image z-score (mean 0, standard deviation 1 over the whole volume), as float32.

    Raises:
        ValueError: NaN/Inf values or a constant volume (its standard deviation is 0).
    """
    arr = np.asarray(volume, dtype=np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{name}: the volume is empty or contains NaN/Inf values.")
    std = float(arr.std())
    if not std > 0:
        raise ValueError(f"{name}: the volume is constant, so it cannot be z-scored.")
    return ((arr - arr.mean()) / std).astype(np.float32)


def resample_xy(volume: np.ndarray, source_xy: float, target_xy: float = TARGET_XY_UM) -> np.ndarray:
    """Resample the Y and X axes of a (Z, Y, X) volume from ``source_xy`` to ``target_xy`` pixels; Z is unchanged.

    The new size is ``round(n * source_xy / target_xy)`` per axis (what ``scipy.ndimage.zoom`` gives for RepMode's
    factor 0.37241). Every slice is resized with MONAI's ``Resize`` (bilinear) with Gaussian anti-aliasing before
    downsampling (sigma = (1/factor - 1) / 2 pixels, as in ``skimage.transform.resize``); slices are treated as
    channels so nothing mixes across Z.

    Raises:
        ValueError: not a 3D volume, non-positive pixel sizes, or a size that would drop to zero.
    """
    from monai.transforms import Resize

    arr = np.asarray(volume, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"resample_xy expects a (Z, Y, X) volume, got shape {arr.shape}.")
    if not (source_xy > 0 and target_xy > 0 and math.isfinite(source_xy) and math.isfinite(target_xy)):
        raise ValueError(f"pixel sizes must be positive, got source {source_xy} and target {target_xy}.")
    factor = source_xy / target_xy
    size = tuple(round(n * factor) for n in arr.shape[1:])
    if min(size) < 1:
        raise ValueError(f"resampling {arr.shape[1:]} by {factor:.4f} leaves no pixels.")
    if size == arr.shape[1:]:
        return arr
    resize = Resize(spatial_size=size, mode="bilinear", anti_aliasing=True, dtype=torch.float32)
    out = resize(torch.from_numpy(np.ascontiguousarray(arr)))
    return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)


def check_output_dir(out_dir: Path, inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse an output folder that is, holds or sits inside an input, or holds files already (unless asked).

    Raises:
        ValueError: ``out_dir`` overlaps an input, is a file, or is a non-empty folder and ``overwrite`` is False.
    """
    out = out_dir.resolve()
    for inp in inputs:
        src = inp.resolve()
        folder = src if src.is_dir() else src.parent
        if out == folder or folder in out.parents or out in src.parents or out == src:
            raise ValueError(
                f"output folder {str(out_dir)!r} overlaps the input {str(inp)!r}; choose a folder outside the inputs "
                "(inputs are never written)."
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {str(out_dir)!r} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"output folder {str(out_dir)!r} is not empty; pass overwrite=True (CLI: --overwrite) to replace it."
        )


LoadEntry = Callable[[dict[str, Any]], tuple[np.ndarray, Optional[np.ndarray], Sequence[float]]]
"""``load(entry) -> (signal, target or None, spacing_zyx)`` of :func:`write_prepared_dataset`."""


def _write_entries(
    staging: Path, entries: Mapping[str, Sequence[dict[str, Any]]], datalist: dict[str, Any], load: LoadEntry
) -> list[dict[str, Any]]:
    """Write every entry's volumes into ``staging``, fill the splits and voxel size of ``datalist``; returns the
    manifest rows."""
    from sparsessp_monai.io import write_ome_tiff

    manifest: list[dict[str, Any]] = []
    for split in SPLITS:
        items = []
        for k, entry in enumerate(entries.get(split, [])):
            structure = entry["structure"]
            stem = f"{structure}/{split}_{k:03d}_{entry['stem']}"
            signal, target, spacing_zyx = load(entry)
            spacing_zyx = [float(v) for v in spacing_zyx]
            if datalist["spacing_zyx_um"] is None:
                datalist["spacing_zyx_um"] = spacing_zyx
            elif not np.allclose(spacing_zyx, datalist["spacing_zyx_um"], rtol=1e-6):
                raise ValueError(
                    f"{entry.get('source')}: voxel size {spacing_zyx} um differs from the other images' "
                    f"{datalist['spacing_zyx_um']}; one dataset needs one voxel size (pass the source spacing)."
                )
            image = f"images/{stem}_signal.ome.tif"
            write_ome_tiff(staging / image, signal, spacing_zyx, channel_names=["signal"])
            item = {"image": image, "structure": structure}
            if target is not None:
                item["label"] = f"images/{stem}_target.ome.tif"
                write_ome_tiff(staging / item["label"], target, spacing_zyx, channel_names=[structure])
            items.append(item)
            manifest.append({"split": split, **item, "source": entry.get("source", "")})
        datalist[split] = items
    return manifest


def write_prepared_dataset(
    out_dir: Path,
    entries: Mapping[str, Sequence[dict[str, Any]]],
    structures: Sequence[str],
    description: str,
    extra: Mapping[str, Any],
    inputs: Iterable[Path],
    overwrite: bool,
    load: LoadEntry,
) -> Path:
    """Write a prepared dataset: every entry's OME-TIFF volumes, ``datalist.json`` and ``manifest.csv``.

    Everything is written into a staging folder beside ``out_dir`` and published at the end
    (:func:`sparsessp_monai.io.staged_folder`, replacing an older ``out_dir`` only then); a failure leaves neither.

    Args:
        out_dir: output folder, checked by :func:`check_output_dir` first.
        entries: per split (:data:`~sparsessp_monai.data.allencell_csv.SPLITS`), dicts with ``structure``,
            ``stem`` (file name part) and ``source`` (provenance), plus whatever ``load`` needs.
        structures: structure names of the datalist.
        description: datalist ``description``.
        extra: more top-level datalist keys (e.g. the split parameters).
        inputs: input files / folders the output must not overlap.
        overwrite: replace a non-empty ``out_dir``.
        load: ``load(entry)`` returns ``(signal, target or None, spacing_zyx)``, (Z, Y, X) float32 volumes; every
            entry must have the same spacing.

    Returns:
        ``out_dir / "datalist.json"``.
    """
    from sparsessp_monai.io import atomic_write_text, csv_text, staged_folder

    check_output_dir(out_dir, inputs, overwrite)
    header = {"name": "AllenCell label-free (SparseSSP)", "description": description, "structures": list(structures)}
    datalist: dict[str, Any] = {**header, "spacing_zyx_um": None, **extra}
    # check_output_dir let through only a new or empty out_dir, or overwrite: the whole folder is replaced
    with staged_folder(out_dir, {**header, **extra}, replace=True) as staging:
        manifest = _write_entries(staging, entries, datalist, load)
        atomic_write_text(staging / "datalist.json", json.dumps(datalist, indent=2))
        fields = ["split", "structure", "image", "label", "source"]
        rows = [[row.get(f, "") for f in fields] for row in manifest]
        atomic_write_text(staging / "manifest.csv", csv_text(fields, rows))
    return out_dir / "datalist.json"


def file_stem(path_czi: str) -> str:
    """The file name of a ``path_czi`` value without its image suffix (:data:`READABLE_SUFFIXES`)."""
    name = Path(path_czi).name
    for suffix in READABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
