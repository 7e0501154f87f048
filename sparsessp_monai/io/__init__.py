"""
Image IO for SparseSSP.

- :mod:`.tiff`: raw OME-TIFF reading / writing of (C, Z, Y, X) volumes with voxel sizes in micrometres.
- :mod:`.reader`: :class:`TiffReader`, the MONAI ``ImageReader`` (``LoadImage(reader=TiffReader)``).
- :mod:`.writer`: :class:`OmeTiffWriter`, the MONAI ``ImageWriter`` (``SaveImage(writer=OmeTiffWriter)``).
- :mod:`.preview`: PNG previews (orthogonal maximum-intensity projections).
- :mod:`.publish`: the package's one safe-write helper (atomic files, staged folders).
"""

from .czi import CZI_SUFFIX, CziReader, read_czi
from .dicom import check_dicom_series, is_dicom_series_folder
from .preview import orthogonal_mips, save_projection_preview, write_png
from .publish import (
    DONE_MARKER,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    csv_text,
    is_complete,
    publish_folder,
    staged_folder,
    staging_path,
)
from .reader import TiffReader, TiffVolume, known_spacing_axes, spacing_to_affine
from .tiff import TIFF_SUFFIXES, read_ome_tiff, write_ome_tiff
from .writer import OmeTiffWriter, ome_tiff_name_formatter

__all__ = [
    "CZI_SUFFIX",
    "DONE_MARKER",
    "TIFF_SUFFIXES",
    "CziReader",
    "OmeTiffWriter",
    "TiffReader",
    "TiffVolume",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_dicom_series",
    "csv_text",
    "is_complete",
    "is_dicom_series_folder",
    "known_spacing_axes",
    "ome_tiff_name_formatter",
    "orthogonal_mips",
    "publish_folder",
    "read_czi",
    "read_ome_tiff",
    "save_projection_preview",
    "spacing_to_affine",
    "staged_folder",
    "staging_path",
    "write_ome_tiff",
    "write_png",
]
