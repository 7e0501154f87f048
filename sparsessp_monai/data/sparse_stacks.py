"""Write genuinely sparse acquisitions (only every r-th slice, with the sparse z-step on file) from full stacks."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_sparse_stacks"]


def write_sparse_stacks(
    datalist_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    ratio: int,
    split: str = "validation",
    offset: int = 0,
) -> str:
    """Keep slices ``offset::ratio`` of every ``image`` of a datalist split and write them as OME-TIFF stacks.

    The files look like a real sparse acquisition: only the acquired slices (C, Z // ratio, Y, X) in the input's
    dtype, ``PhysicalSizeZ`` = ``ratio`` times the full-grid z-step (1 for a stack that records none) and the
    input's channel names, under the input's file name. MONAI's pieces do the work: ``LoadImage`` with
    :class:`~sparsessp_monai.io.TiffReader`, :class:`~sparsessp_monai.transforms.SubsampleZ` (which scales the
    affine's z-step) and ``SaveImage`` with :class:`~sparsessp_monai.io.OmeTiffWriter`. Used to give the inference
    config a default input folder, and by tests. A folder already published with the same parameters is kept
    (:func:`sparsessp_monai.io.is_complete`); otherwise the files are written into a staging folder and published
    at the end, so an interrupted run leaves nothing that looks finished.

    Args:
        datalist_file: a datalist JSON with relative ``image`` paths (e.g. the demo dataset's).
        out_dir: output folder.
        ratio: acquisition ratio.
        split: datalist key to read.
        offset: index of the first acquired slice, ``0 <= offset < ratio``.

    Returns:
        ``out_dir`` as a string.

    Raises:
        ValueError: a bad ratio or offset, or a stack with fewer than ``ratio`` slices.
    """
    import tifffile
    from monai.transforms import LoadImage, SaveImage

    from sparsessp_monai.io import OmeTiffWriter, TiffReader, is_complete, staged_folder
    from sparsessp_monai.transforms import SubsampleZ

    subsample = SubsampleZ(ratio, offset)
    datalist_file = Path(datalist_file)
    out = Path(out_dir)
    record = {"datalist": str(datalist_file.resolve()), "ratio": subsample.ratio, "split": split, "offset": offset}
    items: Sequence[dict] = json.loads(datalist_file.read_text())[split]
    if is_complete(out, record):
        return str(out)
    load = LoadImage(reader=TiffReader(), image_only=True, dtype=None)
    save = SaveImage(writer=OmeTiffWriter, output_ext="", output_dtype=None, print_log=False)
    with staged_folder(out, record) as staging:
        for item in items:
            source = datalist_file.parent / item["image"]
            with tifffile.TiffFile(source) as tif:
                # MONAI holds uint16/uint32 as int32/int64 tensors; the file is written back in its own dtype
                save.set_options(init_kwargs={"output_dtype": tif.series[0].dtype.newbyteorder("=")})
            img = load(source)
            if img.shape[1] < subsample.ratio:
                raise ValueError(f"{item['image']}: {img.shape[1]} slices are too few for ratio {subsample.ratio}.")
            sparse = subsample(img)
            # an unrecorded full-grid step counts as 1: the sparse file records ratio x 1 rather than "unknown"
            sparse.meta["spacing_known"] = True
            sparse.meta.pop("spacing_known_zyx", None)
            save(sparse, filename=staging / Path(item["image"]).name)
    return str(out)
