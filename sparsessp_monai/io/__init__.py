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

__all__ = [
    "DONE_MARKER",
    "TIFF_SUFFIXES",
    "OmeTiffWriter",
    "TiffReader",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "csv_text",
    "is_complete",
    "known_spacing_axes",
    "ome_tiff_name_formatter",
    "orthogonal_mips",
    "publish_folder",
    "read_ome_tiff",
    "save_projection_preview",
    "spacing_to_affine",
    "staged_folder",
    "staging_path",
    "write_ome_tiff",
    "write_png",
]
