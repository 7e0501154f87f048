"""
Raw OME-TIFF reading and writing for (C, Z, Y, X) microscopy volumes (no MONAI classes here).

On disk a volume is stored as (Z, Y, X) or (C, Z, Y, X) with physical voxel sizes in micrometres; in memory
:func:`read_ome_tiff` always returns a channel-first (C, Z, Y, X) array, which is the layout MONAI expects (depth is
the first spatial axis). Voxel sizes are read from OME-XML, ImageJ metadata or the TIFF resolution tags, with
their length units converted to micrometres. The MONAI reader / writer built on this are in
:mod:`sparsessp_monai.io.reader` and :mod:`sparsessp_monai.io.writer`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from sparsessp_monai.engines.errors import BundleInputError, InputFileNotFoundError

from .publish import atomic_write

__all__ = ["TIFF_SUFFIXES", "read_ome_tiff", "write_ome_tiff"]

#: file name endings understood as TIFF (lower case, without the leading dot)
TIFF_SUFFIXES: tuple[str, ...] = ("ome.tiff", "ome.tif", "tiff", "tif")

# length units found in OME-XML (``UnitsLength``) and in ImageJ metadata, as micrometres per unit
_UNIT_TO_UM: dict[str, float] = {
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "µm": 1.0,  # micro sign U+00B5 (what OME and tifffile write)
    "μm": 1.0,  # greek small mu U+03BC (what some software writes)
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}

# TIFF ResolutionUnit tag values (tifffile.RESUNIT) as micrometres per unit; NONE (1) means "no absolute unit"
_RESUNIT_TO_UM: dict[int, float] = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}

# tifffile's axes of unknown meaning for shaped ("Q") and generic multi-page ("I") files
_GENERIC_AXES = "QI"


def _unit_scale(unit: Any) -> float | None:
    """Micrometres per ``unit`` or None when the unit is unknown (e.g. ImageJ's 'pixel')."""
    if unit is None:
        return None
    # ImageJ stores the micro sign as a literal escape sequence in its description
    text = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower()
    return _UNIT_TO_UM.get(text)


def _positive_or_none(value: float | None) -> float | None:
    if value is None or not np.isfinite(value) or value <= 0:
        return None
    return float(value)


def _check_spacing(spacing_zyx: Sequence[float | None]) -> list[float | None]:
    spacing = list(spacing_zyx)
    if len(spacing) != 3:
        raise ValueError(f"spacing_zyx must have three entries (sz, sy, sx), got {spacing_zyx!r}.")
    out: list[float | None] = []
    for s in spacing:
        if s is None:
            out.append(None)
            continue
        value = float(s)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"spacing_zyx entries must be positive finite numbers (or None), got {spacing_zyx!r}.")
        out.append(value)
    return out


def _writable_array(arr: np.ndarray) -> np.ndarray:
    """Cast dtypes that OME-TIFF cannot store to the closest storable type, losslessly or fail."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype in (np.int64, np.uint64):
        # OME has no 64-bit integer pixel type; label maps usually fit in 32 bits
        target = np.dtype(np.int32 if arr.dtype == np.int64 else np.uint32)
        info = np.iinfo(target)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"{arr.dtype} values do not fit in {target}, which is the widest OME integer type.")
        return arr.astype(target)
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def write_ome_tiff(
    path: str | os.PathLike,
    array: np.ndarray,
    spacing_zyx: Sequence[float],
    channel_names: Sequence[str] | None = None,
) -> Path:
    """
    Write a (Z, Y, X) or (C, Z, Y, X) volume as an OME-TIFF with physical sizes in micrometres.

    The file is written with :func:`sparsessp_monai.io.publish.atomic_write` (a hidden temporary file in the
    destination directory, renamed into place), so readers never see a partially written file and a failure
    leaves nothing behind (an existing file of that name is kept).

    A single-channel volume without channel names is stored with axes ``ZYX`` (so that generic TIFF tools see a
    plain stack); otherwise the axes are ``CZYX`` and the OME ``Channel`` elements carry the names.

    Args:
        path: destination file name, conventionally ending in ``.ome.tif``. Parent folders are created.
        array: volume of shape (Z, Y, X) or channel-first (C, Z, Y, X). ``bool`` is stored as ``uint8``,
            ``float16`` as ``float32`` and 64-bit integers as 32-bit integers when the values fit.
        spacing_zyx: voxel size (sz, sy, sx) in micrometres; an entry may be None when it is unknown, in which
            case the corresponding ``PhysicalSize`` attribute is omitted.
        channel_names: optional names, one per channel.

    Returns:
        The destination path.

    Raises:
        ValueError: when the array is not 3D/4D, the spacing is not three positive numbers, the number of channel
            names does not match the number of channels or the dtype cannot be stored.
    """
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or 0 in arr.shape:
        raise ValueError(f"write_ome_tiff expects a non-empty (Z, Y, X) or (C, Z, Y, X) array, got shape {arr.shape}.")
    spacing = _check_spacing(spacing_zyx)
    n_channels = arr.shape[0]
    names = [str(n) for n in channel_names] if channel_names is not None else None
    if names is not None and len(names) != n_channels:
        raise ValueError(f"got {len(names)} channel names for {n_channels} channel(s).")
    arr = _writable_array(arr)

    single = n_channels == 1 and names is None
    metadata: dict[str, Any] = {"axes": "ZYX" if single else "CZYX"}
    for axis, size in zip("ZYX", spacing):
        if size is not None:
            metadata[f"PhysicalSize{axis}"] = size
            metadata[f"PhysicalSize{axis}Unit"] = "µm"
    if names is not None:
        metadata["Channel"] = {"Name": names}
    data = np.ascontiguousarray(arr[0] if single else arr)

    # photometric is explicit so that a (3, Y, X) or (Z, Y, 3) volume is never mistaken for RGB; ome=True because
    # the temporary file's name does not end in .ome.tif
    return atomic_write(
        path, lambda tmp: tifffile.imwrite(tmp, data, ome=True, metadata=metadata, photometric="minisblack")
    )


def _ome_pixels_info(ome_xml: str | None) -> tuple[list[float | None], list[str] | None]:
    """Physical sizes (z, y, x) in um and channel names of the first OME Image."""
    spacing: list[float | None] = [None, None, None]
    if not ome_xml:
        return spacing, None
    root = ET.fromstring(ome_xml)
    # OME namespaces differ between schema versions, so match on the local tag name only
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return spacing, None
    for i, axis in enumerate("ZYX"):
        raw = pixels.get(f"PhysicalSize{axis}")
        if raw is None:
            continue
        # OME's default unit for PhysicalSize* is the micrometre
        scale = _unit_scale(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if scale is not None:
            spacing[i] = _positive_or_none(float(raw) * scale)
    channels = [el for el in pixels if el.tag.rsplit("}", 1)[-1] == "Channel"]
    names = [el.get("Name", "") for el in channels]
    return spacing, (names if any(names) else None)


def _resolution_um(page: Any, scale: float | None, one_is_unknown: bool) -> tuple[float | None, float | None]:
    """(sy, sx) in um from the Y/XResolution tags (pixels per unit) given micrometres per unit."""
    if scale is None:
        return None, None
    out: list[float | None] = []
    for tag in ("YResolution", "XResolution"):
        value = page.tags.get(tag)
        if value is None:
            out.append(None)
            continue
        num, den = value.value
        # in plain TIFFs 1 pixel/unit is the placeholder most libraries write when no resolution is known; in
        # ImageJ files with a real unit it genuinely means 1 unit per pixel
        unknown = num == 0 or (one_is_unknown and num == den)
        out.append(None if unknown else _positive_or_none(scale * den / num))
    return out[0], out[1]


def _tiff_spacing(tif: tifffile.TiffFile) -> tuple[list[float | None], list[str] | None]:
    """Spacing (z, y, x) in um and channel names from OME, ImageJ or plain TIFF resolution metadata."""
    if tif.is_ome:
        spacing, names = _ome_pixels_info(tif.ome_metadata)
        if any(s is not None for s in spacing):
            return spacing, names
    else:
        names = None
    page = tif.pages[0]
    ij = tif.imagej_metadata
    if ij:
        # ImageJ: 'unit' applies to the resolution tags (ResolutionUnit is NONE) and to 'spacing' (Z step)
        scale = _unit_scale(ij.get("unit"))
        sy, sx = _resolution_um(page, scale, one_is_unknown=False)
        z = ij.get("spacing")
        sz = _positive_or_none(float(z) * scale) if z is not None and scale is not None else None
        return [sz, sy, sx], names
    unit = page.tags.get("ResolutionUnit")
    scale = _RESUNIT_TO_UM.get(int(unit.value)) if unit is not None else None
    sy, sx = _resolution_um(page, scale, one_is_unknown=True)
    return [None, sy, sx], names


def _to_czyx(data: np.ndarray, axes: str, path: str) -> np.ndarray:
    """Rearrange a tifffile series (unsqueezed axes) into (C, Z, Y, X)."""
    axes = stored = axes.upper()
    if len(axes) != data.ndim:
        raise BundleInputError(f"{path}: axes {axes!r} do not match the data shape {data.shape}.")
    sizes = dict(zip(axes, data.shape))
    if "S" in sizes and sizes["S"] > 1:
        # samples (e.g. RGB) are treated as channels unless the file also has real channels
        if sizes.get("C", 1) > 1:
            raise BundleInputError(f"{path}: both channels and samples per pixel (axes {axes!r}) are not supported.")
        if "C" in sizes:
            data = np.squeeze(data, axis=axes.index("C"))
            axes = axes.replace("C", "")
        axes = axes.replace("S", "C")
        sizes = dict(zip(axes, data.shape))
    generic = [a for a in axes if a in _GENERIC_AXES and sizes[a] > 1]
    if "Z" not in axes and len(generic) == 1:
        # a plain multi-page or shaped TIFF: the only non-singleton unknown axis is the stack (Z) axis
        axes = axes.replace(generic[0], "Z", 1)
    elif generic:
        raise BundleInputError(
            f"{path}: cannot tell which axis is Z in a plain TIFF of shape {data.shape} (axes {axes!r}); "
            "write it as OME-TIFF (e.g. sparsessp_monai.io.write_ome_tiff) so the axes are explicit."
        )
    sizes = dict(zip(axes, data.shape))
    extra = [a for a in axes if a not in "CZYX" and sizes[a] > 1]
    if extra:
        raise BundleInputError(
            f"{path}: axes {axes!r} (shape {data.shape}) include non-singleton axes {extra} (e.g. time); "
            "only single time point (C, Z, Y, X) volumes are supported."
        )
    if "Y" not in axes or "X" not in axes or "Z" not in axes:
        raise BundleInputError(
            f"{path}: expected a 3D (Z, Y, X) volume but the TIFF has axes {stored!r} with shape {data.shape} "
            "(a 2D image?)."
        )
    # drop the singleton extra axes, then add a channel axis if there is none
    keep = [i for i, a in enumerate(axes) if a in "CZYX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "C" not in axes:
        data = data[None]
        axes = "C" + axes
    return np.transpose(data, [axes.index(a) for a in "CZYX"])


def _read_problem(path: str, exc: BaseException) -> str:
    """What is wrong with a TIFF file that tifffile could not read, in words (tifffile's message as the detail)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] not in (b"II", b"MM"):
        # every TIFF starts with the byte-order mark II or MM
        return f"not a TIFF file (it starts with {head!r}; a TIFF starts with b'II' or b'MM')"
    message = str(exc) or type(exc).__name__
    if "failed to read" in message or isinstance(exc, EOFError):
        return f"the file is truncated ({message}); copy it again"
    return f"the file is damaged or not a valid TIFF ({type(exc).__name__}: {message})"


def read_ome_tiff(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """
    Read a 3D TIFF volume (OME-TIFF, ImageJ hyperstack or plain multi-page TIFF) as a (C, Z, Y, X) array.

    The first image series of the file is read. Axes are taken from the OME/ImageJ metadata when present
    (e.g. ``TCZYX`` with a single time point or ImageJ's ``ZCYX``); a plain stack without metadata is read as
    (Z, Y, X) with one channel, and samples per pixel (RGB) become channels. Singleton non-spatial axes are
    dropped. A file with an explicit Z axis of size 1 (2D OME/ImageJ image) is returned with Z = 1; a file with no
    Z axis at all is rejected.

    Args:
        path: path of the TIFF file.

    Returns:
        A tuple ``(array, meta)``: ``array`` is channel-first (C, Z, Y, X) in the file's dtype (native byte order);
        ``meta`` has

            - ``"spacing_zyx"``: tuple (sz, sy, sx) in micrometres; an entry is None when the file does not say.
              Taken from OME ``PhysicalSize{X,Y,Z}`` (units converted, e.g. nm -> um), else ImageJ ``spacing`` and
              ``unit`` with the resolution tags, else the TIFF resolution tags with an absolute ResolutionUnit.
            - ``"channel_names"``: list of C names (OME ``Channel@Name``) or None.
            - ``"axes"``: the axes string of the series as stored in the file (tifffile convention).

    Raises:
        sparsessp_monai.engines.errors.InputFileNotFoundError: when ``path`` does not exist (a
            ``FileNotFoundError``).
        sparsessp_monai.engines.BundleInputError: naming the file and the problem (a ``ValueError``), when it is not
            a TIFF, is truncated or damaged, is not a 3D volume, has several time points or ambiguous axes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"TIFF file not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise BundleInputError(f"{path}: the TIFF header lists no image (a scrambled or damaged file?).")
            series = tif.series[0]
            stored_axes = series.axes
            # unsqueezed axes keep singleton Z/C/T, so a one-slice OME volume is still recognised as having a Z axis
            if hasattr(series, "get_axes"):
                full_axes, full_shape = series.get_axes(squeeze=False), series.get_shape(squeeze=False)
            else:  # tifffile before 2023.7 only exposes the squeezed axes
                full_axes, full_shape = series.axes, series.shape
            data = series.asarray().reshape(full_shape)
            spacing, names = _tiff_spacing(tif)
    except (BundleInputError, MemoryError):
        raise
    except Exception as exc:  # corrupt files surface as TiffFileError/struct/KeyError/IndexError/ET.ParseError etc.
        raise BundleInputError(f"cannot read TIFF file {path}: {_read_problem(path, exc)}") from exc

    array = _to_czyx(data, full_axes, path)
    if not array.dtype.isnative:
        # torch cannot hold big-endian data
        array = array.astype(array.dtype.newbyteorder("="))
    if names is not None and len(names) != array.shape[0]:
        names = None
    meta: dict[str, Any] = {"spacing_zyx": tuple(spacing), "channel_names": names, "axes": stored_axes}
    return array, meta
