"""Image IO for SparseSSP: OME-TIFF reading/writing, MONAI reader/writer classes and PNG previews."""

from .ome_tiff import (
    TIFF_SUFFIXES,
    OmeTiffWriter,
    TiffReader,
    known_spacing_axes,
    ome_tiff_name_formatter,
    read_ome_tiff,
    spacing_to_affine,
    write_ome_tiff,
)
from .preview import orthogonal_mips, save_projection_preview, write_png

__all__ = [
    "TIFF_SUFFIXES",
    "OmeTiffWriter",
    "TiffReader",
    "known_spacing_axes",
    "ome_tiff_name_formatter",
    "orthogonal_mips",
    "read_ome_tiff",
    "save_projection_preview",
    "spacing_to_affine",
    "write_ome_tiff",
    "write_png",
]
