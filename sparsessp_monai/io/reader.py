"""
MONAI image reader for 3D TIFF volumes: :class:`TiffReader` and the affine / spacing-flag conventions it sets.

The reader returns channel-first (C, Z, Y, X) data with the affine ``diag(sz, sy, sx, 1)`` (voxel index ->
micrometres); :func:`known_spacing_axes` reads back which of the three sizes the file actually recorded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, convert_data_type, ensure_tuple

from sparsessp_monai.engines.errors import BundleInputError

from .tiff import TIFF_SUFFIXES, read_ome_tiff

__all__ = ["TiffReader", "TiffVolume", "known_spacing_axes", "spacing_to_affine"]


def _has_tiff_suffix(name: PathLike) -> bool:
    lower = os.fspath(name).lower()
    return any(lower.endswith(f".{s}") for s in TIFF_SUFFIXES)


def spacing_to_affine(spacing_zyx: Sequence[float]) -> np.ndarray:
    """
    Affine of a (Z, Y, X) voxel grid: ``diag(sz, sy, sx, 1)``, mapping voxel index (z, y, x) to micrometres.

    ``monai.data.utils.affine_to_spacing`` on the result gives back ``(sz, sy, sx)``.

    Args:
        spacing_zyx: voxel size (sz, sy, sx) in micrometres.

    Returns:
        A 4x4 float64 array.
    """
    values = [float(s) for s in spacing_zyx]
    if len(values) != 3:
        raise ValueError(f"spacing_zyx must have three entries, got {spacing_zyx!r}.")
    return np.diag([*values, 1.0])


@dataclass
class TiffVolume:
    """What :meth:`TiffReader.read` returns per file: the (C, Z, Y, X) array and :func:`read_ome_tiff` meta."""

    array: np.ndarray
    meta: dict[str, Any]
    filename: str


def known_spacing_axes(meta: Mapping) -> np.ndarray | None:
    """Which of (sz, sy, sx) the source file recorded, from :class:`TiffReader`'s ``spacing_known_zyx``.

    The flags may arrive as a list, array or (after collation) tensor. Returns a bool array of three, or ``None``
    when the meta has no per-axis flags (other readers).
    """
    flags = meta.get("spacing_known_zyx")
    if flags is None:
        return None
    flags = np.asarray(convert_data_type(flags, np.ndarray)[0]).reshape(-1)
    return flags.astype(bool) if flags.size == 3 else None


class TiffReader(ImageReader):
    """
    MONAI image reader for 3D TIFF volumes (``.tif``, ``.tiff``, ``.ome.tif``, ``.ome.tiff``).

    Files are read with :func:`read_ome_tiff`, so OME-TIFF, ImageJ hyperstacks and plain multi-page stacks are
    understood. The data is always returned **channel-first**, (C, Z, Y, X), with depth as the first spatial axis,
    and ``original_channel_dim`` is set to 0 so ``LoadImage(..., ensure_channel_first=True)`` is a no-op on it.

    Meta data (besides what ``LoadImage`` adds):

        - ``affine`` / ``original_affine``: ``diag(sz, sy, sx, 1)`` (voxel index -> micrometres), so
          ``monai.data.utils.affine_to_spacing(affine)`` is the (sz, sy, sx) spacing.
        - ``spatial_shape``: (Z, Y, X).
        - ``spacing_zyx``: float array (sz, sy, sx) in micrometres; unknown entries are 1.0.
        - ``spacing_known``: False when any of the three sizes is missing from the file (it is then 1.0 above).
        - ``spacing_known_zyx``: bool array, which of (sz, sy, sx) the file records.
        - ``channel_names``: list of C strings, ``""`` for an unnamed channel (never None, so batches collate).
        - ``axes``: the axes of the image series as stored in the file.

    When several files are given (``LoadImage`` with a list of names) they are concatenated along the channel axis;
    they must have the same spatial shape and spacing.

    Example::

        from monai.transforms import LoadImaged
        from sparsessp_monai.io import TiffReader

        load = LoadImaged(keys=["image"], reader=TiffReader, image_only=True)
        volume = load({"image": "cell.ome.tif"})["image"]  # MetaTensor (C, Z, Y, X)

    In a bundle config, ``"reader": "sparsessp_monai.io.TiffReader"`` (a plain dotted path, which ``LoadImage``
    resolves itself) works without any imports; the expression form needs the module bound to a name first, e.g.
    ``"imports": ["$import sparsessp_monai.io as sio"]`` and ``"reader": "$sio.TiffReader"`` (MONAI's
    ``$import a.b`` binds the name ``"a.b"``, not ``a``, so ``"$sparsessp_monai.io.TiffReader"`` after only
    ``"$import sparsessp_monai.io"`` fails).

    ``LoadImage`` catches a reader's exception and tries its other readers, so a broken TIFF would be reported as
    "cannot find a suitable reader"; :class:`sparsessp_monai.transforms.LoadVolumed` passes this reader for TIFF
    names directly so that its one-line reason reaches the user.
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """
        Verify whether all the given file names end with a TIFF suffix.

        Args:
            filename: file name or a list of file names to read.
        """
        return all(_has_tiff_suffix(name) for name in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> TiffVolume | list[TiffVolume]:
        """
        Read one or several TIFF files (the pixel data is loaded here, so read errors surface at this step).

        Args:
            data: file name or a list of file names to read.
            kwargs: not supported; present for the ``ImageReader`` interface.

        Returns:
            One loaded volume, or a list of them for a list of file names.

        Raises:
            TypeError: when keyword arguments are given.
            sparsessp_monai.engines.BundleInputError: naming the file, when it cannot be read as a 3D volume (see
                :func:`read_ome_tiff`).
        """
        if kwargs:
            raise TypeError(f"{type(self).__name__}.read() got unexpected keyword arguments {sorted(kwargs)}.")
        filenames = [os.fspath(name) for name in ensure_tuple(data)]
        volumes = []
        for name in filenames:
            array, meta = read_ome_tiff(name)
            volumes.append(TiffVolume(array=array, meta=meta, filename=name))
        return volumes if len(volumes) > 1 else volumes[0]

    def get_data(self, img: TiffVolume | Sequence[TiffVolume]) -> tuple[np.ndarray, dict]:
        """
        Extract the (C, Z, Y, X) array and the MONAI meta dict from volumes returned by :meth:`read`.

        Args:
            img: a volume or a list of volumes from :meth:`read`; a list is concatenated along the channels.

        Returns:
            A tuple ``(array, meta)`` as described in the class docstring.

        Raises:
            sparsessp_monai.engines.BundleInputError: when several volumes differ in spatial shape or spacing.
        """
        volumes = list(img) if isinstance(img, (list, tuple)) else [img]
        arrays: list[np.ndarray] = []
        names: list[str] = []
        first: dict[str, Any] = {}
        for vol in volumes:
            raw_spacing = vol.meta["spacing_zyx"]
            spacing = np.asarray([1.0 if s is None else float(s) for s in raw_spacing], dtype=np.float64)
            affine = spacing_to_affine(spacing)
            n_channels = vol.array.shape[0]
            header: dict[str, Any] = {
                MetaKeys.AFFINE: affine,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(vol.array.shape[1:]),
                MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
                "spacing_zyx": spacing,
                "spacing_known": all(s is not None for s in raw_spacing),
                "spacing_known_zyx": np.asarray([s is not None for s in raw_spacing], dtype=bool),
                "axes": vol.meta["axes"],
            }
            if not first:
                first = header
            elif not np.array_equal(header[MetaKeys.SPATIAL_SHAPE], first[MetaKeys.SPATIAL_SHAPE]) or not np.allclose(
                affine, first[MetaKeys.AFFINE]
            ):
                raise BundleInputError(
                    f"cannot stack {vol.filename} with {volumes[0].filename} as channels: spatial shape "
                    f"{tuple(header[MetaKeys.SPATIAL_SHAPE])} vs {tuple(first[MetaKeys.SPATIAL_SHAPE])}, "
                    f"spacing {tuple(spacing)} vs {tuple(first['spacing_zyx'])}."
                )
            else:
                first["spacing_known"] = first["spacing_known"] and header["spacing_known"]
                first["spacing_known_zyx"] = first["spacing_known_zyx"] & header["spacing_known_zyx"]
            arrays.append(vol.array)
            names.extend(vol.meta["channel_names"] or [""] * n_channels)
        data = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        meta = dict(first)
        meta["channel_names"] = names
        return data, meta
