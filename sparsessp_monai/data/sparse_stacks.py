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

    The files look like a real sparse acquisition: only the acquired slices, ``PhysicalSizeZ`` = ``ratio`` times
    the full-grid z-step. Used to give the inference config a default input folder, and by tests. Files that
    already exist with the same content parameters are kept (a ``sparse_stacks.json`` records them).

    Args:
        datalist_file: a datalist JSON with relative ``image`` paths (e.g. the demo dataset's).
        out_dir: output folder.
        ratio: acquisition ratio.
        split: datalist key to read.
        offset: index of the first acquired slice.

    Returns:
        ``out_dir`` as a string.
    """
    from sparsessp_monai.io import read_ome_tiff, write_ome_tiff
    from sparsessp_monai.transforms.array import check_ratio

    ratio = check_ratio(ratio)
    datalist_file = Path(datalist_file)
    out = Path(out_dir)
    record = {"datalist": str(datalist_file.resolve()), "ratio": ratio, "split": split, "offset": offset}
    marker = out / "sparse_stacks.json"
    items: Sequence[dict] = json.loads(datalist_file.read_text())[split]
    if marker.is_file() and json.loads(marker.read_text()).get("params") == record:
        if all((out / Path(item["image"]).name).is_file() for item in items):
            return str(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in items:
        data, meta = read_ome_tiff(datalist_file.parent / item["image"])
        sz, sy, sx = (s if s is not None else 1.0 for s in meta["spacing_zyx"])
        if data.shape[1] < ratio:
            raise ValueError(f"{item['image']}: {data.shape[1]} slices are too few for ratio {ratio}.")
        write_ome_tiff(
            out / Path(item["image"]).name,
            data[:, offset::ratio],
            spacing_zyx=(sz * ratio, sy, sx),
            channel_names=meta.get("channel_names"),
        )
    marker.write_text(json.dumps({"params": record, "files": [Path(i["image"]).name for i in items]}, indent=2))
    return str(out)
