"""Datalists of thin-slice volumes for the CT bundle configs, and genuinely sparse NIfTI files for inference."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparsessp_monai.io import is_complete, staged_folder
from sparsessp_monai.transforms.array import check_ratio

__all__ = ["NIFTI_SUFFIXES", "ct_datalist", "write_sparse_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES))


def ct_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    demo: dict[str, Any] | None = None,
    num_val: int = 1,
) -> list[dict[str, str]]:
    """The ``split`` (``"training"`` or ``"validation"``) items ``{"image": absolute path}`` of a CT dataset folder.

    In order:

    1. ``dataset_dir/datalist.json`` exists: a Decathlon datalist (``{"training": [{"image": "a.nii.gz"}, ...],
       "validation": [...]}``, paths relative to ``dataset_dir``).
    2. the folder holds NIfTI files: sorted by name, the last ``num_val`` are the validation split.

    With ``demo`` (keyword arguments of :func:`~sparsessp_monai.data.synthetic_ct.generate_ct_dataset`), synthetic
    phantoms are first written to ``dataset_dir`` (or reused if already there with the same parameters).

    Raises:
        ValueError: unknown split, a folder with neither a datalist nor NIfTI files, or too few
            files for a training and a validation split.
    """
    if split not in ("training", "validation"):
        raise ValueError(f"split must be 'training' or 'validation', got {split!r}.")
    root = Path(dataset_dir)
    if demo is not None:
        from sparsessp_monai.data.synthetic_ct import generate_ct_dataset

        generate_ct_dataset(root, **demo)
    datalist_file = root / "datalist.json"
    if datalist_file.is_file():
        items = json.loads(datalist_file.read_text()).get(split)
        if not items:
            raise ValueError(f"{datalist_file} has no {split!r} items.")
        return [{**item, "image": str((root / item["image"]).resolve())} for item in items]
    files = _nifti_files(root) if root.is_dir() else []
    if not files:
        raise ValueError(
            f"{str(root)!r} holds neither a datalist.json nor NIfTI volumes ({', '.join(NIFTI_SUFFIXES)})."
        )
    if len(files) <= num_val:
        raise ValueError(f"{str(root)!r}: {len(files)} NIfTI volume(s) are too few for {num_val} validation volume(s).")
    chosen = files[-num_val:] if split == "validation" else files[:-num_val]
    return [{"image": str(f.resolve())} for f in chosen]


def write_sparse_nifti(
    items: Sequence[dict[str, str]] | str | os.PathLike,
    out_dir: str | os.PathLike,
    ratio: int,
    offset: int = 0,
) -> str:
    """Keep every ``ratio``-th axial slice of thin-slice NIfTI volumes, as a sparse acquisition would record them.

    The axial (superior-inferior) axis is found from each file's affine, whatever its storage position; the written
    affine has ``ratio`` times the slice spacing and the first kept slice's position, so the file describes the
    acquired slices in world coordinates. A folder already published with the same parameters is kept
    (:func:`sparsessp_monai.io.is_complete`); otherwise the files are written into a staging folder and published
    at the end (:func:`sparsessp_monai.io.staged_folder`; other files in ``out_dir`` are left alone), so a failed
    run leaves nothing behind.

    Args:
        items: datalist items ``{"image": path}``, or a folder of NIfTI volumes.
        out_dir: output folder (same file names).
        ratio: acquisition ratio.
        offset: index of the first kept slice, counted from the inferior end.

    Returns:
        ``out_dir`` as a string.
    """
    import nibabel as nib

    ratio = check_ratio(ratio)
    if not isinstance(items, (list, tuple)):
        items = [{"image": str(f)} for f in _nifti_files(Path(items))]
    out = Path(out_dir)
    record = {"files": [str(Path(i["image"]).resolve()) for i in items], "ratio": ratio, "offset": int(offset)}
    if is_complete(out, record):
        return str(out)
    with staged_folder(out, record) as staging:
        for path in record["files"]:
            nib.save(_sparse_image(nib.load(path), path, ratio, offset), str(staging / Path(path).name))
    return str(out)


def _sparse_image(img: Any, path: str, ratio: int, offset: int) -> Any:
    """The kept axial slices of a loaded NIfTI image, with the sparse grid's affine."""
    import nibabel as nib

    codes = nib.aff2axcodes(img.affine)
    axis = next(i for i, c in enumerate(codes) if c in ("S", "I"))
    data = np.asarray(img.dataobj)
    depth = data.shape[axis]
    if depth < ratio:
        raise ValueError(f"{path}: {depth} axial slices are too few for ratio {ratio}.")
    # count from the inferior end, slice 0 of the configs' "SPL" orientation (index increasing toward superior),
    # so that n slices rebuild the n * ratio thin slices starting at the original volume's first slice
    if codes[axis] == "S":
        keep = np.arange(offset, depth, ratio)
    else:
        keep = np.sort(np.arange(depth - 1 - offset, -1, -ratio))
    # sparse voxel j is storage voxel keep[0] + j * ratio along the axial axis
    step = np.eye(4)
    step[axis, axis], step[axis, 3] = ratio, keep[0]
    return nib.Nifti1Image(np.take(data, keep, axis=axis), img.affine @ step, header=img.header)
