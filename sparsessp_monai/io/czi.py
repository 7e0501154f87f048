"""
ZEISS CZI files through the ``czi`` extra (bioio + bioio-czi, the community's CZI reader): :func:`read_czi` and the
MONAI reader :class:`CziReader`, which returns the same (C, Z, Y, X) data and meta as
:class:`~sparsessp_monai.io.TiffReader` (voxel sizes from the CZI metadata, channel names).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.utils import ensure_tuple

from sparsessp_monai.engines.errors import BundleInputError

from .reader import TiffReader, TiffVolume

__all__ = ["CZI_SUFFIX", "CziReader", "read_czi"]

CZI_SUFFIX = ".czi"


def read_czi(path: str | os.PathLike, timepoint: int = 0, scene: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one time point of a CZI file as (C, Z, Y, X) with ``meta`` as :func:`~sparsessp_monai.io.read_ome_tiff`
    gives it: ``spacing_zyx`` in micrometres (None where the file records none), ``channel_names``, ``axes``.

    Raises:
        BundleInputError: the extra is not installed, the file cannot be read as CZI, or has no such time point /
            scene; the message names the file.
    """
    try:
        from bioio import BioImage
        from bioio_czi import Reader
    except ImportError:
        raise BundleInputError(
            f"{path}: reading CZI files needs the 'czi' extra (bioio, bioio-czi): pip install 'sparsessp_monai[czi]'."
        ) from None
    try:
        img = BioImage(os.fspath(path), reader=Reader)
        if scene:
            img.set_scene(scene)
        n_t = int(img.dims.T)
        if not 0 <= timepoint < n_t:
            raise BundleInputError(f"{path}: time point {timepoint} requested, the file has {n_t}.")
        data = np.asarray(img.get_image_data("CZYX", T=int(timepoint)))
        sizes = img.physical_pixel_sizes
        names = [str(c) for c in img.channel_names] if img.channel_names else None
    except BundleInputError:
        raise
    except Exception as exc:  # bioio raises many types for unreadable files: name the file
        raise BundleInputError(f"{path}: cannot be read as CZI ({type(exc).__name__}: {exc}).") from exc
    spacing = tuple(None if s is None else float(s) for s in (sizes.Z, sizes.Y, sizes.X))
    return data, {"spacing_zyx": spacing, "channel_names": names, "axes": "CZYX"}


class CziReader(TiffReader):
    """
    MONAI image reader for ZEISS ``.czi`` files (first time point, first scene): :func:`read_czi`, then the same
    meta handling as :class:`~sparsessp_monai.io.TiffReader` (affine ``diag(sz, sy, sx, 1)`` in micrometres,
    per-axis ``spacing_known_zyx``, channel names). Needs the ``czi`` extra.

    In a bundle config: ``"reader": ["sparsessp_monai.io.TiffReader", "sparsessp_monai.io.CziReader"]``.
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether all the given file names end with ``.czi``."""
        return all(os.fspath(name).lower().endswith(CZI_SUFFIX) for name in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> TiffVolume | list[TiffVolume]:
        """Read one or several CZI files (see :meth:`TiffReader.read`)."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.read() got unexpected keyword arguments {sorted(kwargs)}.")
        volumes = []
        for name in (os.fspath(n) for n in ensure_tuple(data)):
            array, meta = read_czi(name)
            volumes.append(TiffVolume(array=array, meta=meta, filename=name))
        return volumes if len(volumes) > 1 else volumes[0]
