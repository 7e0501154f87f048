"""Input discovery for inference: the sparse stacks of a folder, one datalist item per (stack, structure)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["INPUT_SUFFIXES", "build_inference_datalist", "is_input_file"]

INPUT_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".nii", ".nii.gz")


def is_input_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with one of :data:`INPUT_SUFFIXES`."""
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(INPUT_SUFFIXES)


def build_inference_datalist(
    input_dir: str | os.PathLike, predict: Sequence[str] | str, structures: Sequence[str]
) -> list[dict[str, Any]]:
    """One item per (input stack, structure to predict), sorted by file name.

    Args:
        input_dir: folder of sparse transmitted-light stacks (TIFF, OME-TIFF or NIfTI), or a single file.
        predict: structure name(s) to predict for every stack.
        structures: the names the model was trained on, in task-id order.

    Raises:
        ValueError: no input files, or a structure name the model does not know.
    """
    predict = [predict] if isinstance(predict, str) else list(predict)
    unknown = [s for s in predict if s not in structures]
    if unknown or not predict:
        raise ValueError(f"unknown structure name(s) {unknown or predict}; this model knows {list(structures)}.")
    root = Path(input_dir)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.iterdir() if is_input_file(p))
    else:
        raise ValueError(f"input folder {str(root)!r} does not exist.")
    if not files:
        raise ValueError(f"no TIFF/OME-TIFF/NIfTI stacks ({', '.join(INPUT_SUFFIXES)}) in {str(root)!r}.")
    return [{"image": str(f), "structure": s} for f in files for s in predict]
