"""
Input discovery for inference: the sparse stacks of a folder, one datalist item per (stack, structure), each with
the unique name its outputs get.

Output names: a prediction is written as ``<name>_<structure>.<format>`` (its preview as
``<name>_<structure>_preview.png``), where ``<name>`` is the input file name without its suffix (one of
:data:`INPUT_SUFFIXES`, e.g. ``cell.ome.tif`` -> ``cell``). When several inputs of one run share that stem (ignoring
case, as some file systems do), each of them keeps its suffix with the dots turned into underscores, so
``cell.ome.tif``, ``cell.tif`` and ``cell.nii.gz`` give ``cell_ome_tif``, ``cell_tif`` and ``cell_nii_gz``. The
names depend only on the file names of the run, so they are the same every time; a run whose output names would
still clash is refused before anything is computed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparsessp_monai.engines.errors import BundleInputError

__all__ = [
    "INPUT_SUFFIXES",
    "OUTPUT_NAME_KEY",
    "build_inference_datalist",
    "check_name_part",
    "input_stem",
    "is_input_file",
    "output_names",
    "split_input_name",
]

INPUT_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".nii", ".nii.gz")

OUTPUT_NAME_KEY = "output_name"
"""Datalist key of the name an item's outputs are written under (see the module docstring)."""

# besides the separators: characters Windows / SMB shares refuse, and NUL
_UNSAFE_CHARS = set('/\\:*?"<>|\0')


def is_input_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with one of :data:`INPUT_SUFFIXES`."""
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(INPUT_SUFFIXES)


def split_input_name(name: str) -> tuple[str, str]:
    """``(stem, suffix)`` of a file name: the longest of :data:`INPUT_SUFFIXES` it ends with (any case), or
    ``(name, "")``."""
    lower = name.lower()
    matches = [s for s in INPUT_SUFFIXES if lower.endswith(s) and len(name) > len(s)]
    if not matches:
        return name, ""
    cut = len(max(matches, key=len))
    return name[:-cut], name[-cut:]


def input_stem(path: str | os.PathLike) -> str:
    """The file name of ``path`` without its input suffix: ``/data/cell.ome.tif`` -> ``cell``."""
    return split_input_name(Path(path).name)[0]


def check_name_part(name: str, what: str = "structure name") -> str:
    """Return ``name`` if it can be part of a file name; otherwise raise.

    Names of structures (and output postfixes) become parts of output file names, so one holding a path separator,
    ``..`` or another character file systems refuse could write outside the output folder.

    Raises:
        BundleInputError: an empty name, or one with ``/``, ``\\``, ``..``, ``: * ? " < > |``, a control character,
            a leading dot or surrounding spaces.
    """
    text = str(name)
    bad = sorted({c for c in text if c in _UNSAFE_CHARS or ord(c) < 32})
    if not text or bad or ".." in text or text.startswith(".") or text != text.strip():
        if bad:
            why = f"it holds {''.join(bad)!r}"
        else:
            why = "it is empty" if not text else "it holds '..', starts with a dot or has surrounding spaces"
        raise BundleInputError(
            f"{what} {text!r} cannot be used in output file names ({why}); use letters, digits, '_' or '-'."
        )
    return text


def output_names(files: Sequence[str | os.PathLike]) -> list[str]:
    """The output name of each input file (see the module docstring): its stem, or, where stems clash (ignoring
    case), its stem and suffix joined by underscores.

    Raises:
        BundleInputError: two files that would still get the same name.
    """
    parts = [split_input_name(Path(f).name) for f in files]
    counts = Counter(stem.casefold() for stem, _ in parts)
    names = [stem if counts[stem.casefold()] == 1 else stem + suffix.replace(".", "_") for stem, suffix in parts]
    _refuse_clashes(names, [str(f) for f in files], "outputs")
    return names


def _refuse_clashes(names: Sequence[str], sources: Sequence[str], what: str) -> None:
    """Raise naming every group of ``sources`` whose ``names`` are equal ignoring case."""
    groups: dict[str, list[str]] = {}
    for name, source in zip(names, sources):
        groups.setdefault(name.casefold(), []).append(source)
    clashes = [g for g in groups.values() if len(g) > 1]
    if clashes:
        listed = "; ".join(" and ".join(repr(s) for s in g) for g in clashes)
        raise BundleInputError(
            f"{listed} would write {what} under the same name (file names are compared ignoring case); rename one "
            "of them."
        )


def build_inference_datalist(
    input_dir: str | os.PathLike, predict: Sequence[str] | str, structures: Sequence[str]
) -> list[dict[str, Any]]:
    """One item per (input stack, structure to predict), sorted by file name: ``{"image": path, "structure": name,
    "output_name": name of its outputs}`` (see the module docstring for the output names).

    Args:
        input_dir: folder of sparse stacks (TIFF, OME-TIFF or NIfTI files, or DICOM series folders), a single
            file, or one DICOM series folder.
        predict: structure name(s) to predict for every stack.
        structures: the names the model was trained on, in task-id order.

    Raises:
        BundleInputError: no input files, a structure name the model does not know or that cannot be part of a
            file name, or inputs whose outputs would get the same name.
    """
    predict = [predict] if isinstance(predict, str) else list(predict)
    unknown = [s for s in predict if s not in structures]
    if unknown or not predict:
        raise BundleInputError(
            f"unknown structure name(s) {unknown or predict}; this model knows {list(structures)}."
        )
    for s in predict:
        check_name_part(s)
    from sparsessp_monai.io.dicom import is_dicom_series_folder

    root = Path(input_dir)
    if root.is_file() or is_dicom_series_folder(root):
        files = [root]
    elif root.is_dir():
        # stacks, and DICOM series (one folder each)
        files = sorted(p for p in root.iterdir() if is_input_file(p) or is_dicom_series_folder(p))
    else:
        raise BundleInputError(f"input folder {str(root)!r} does not exist.")
    if not files:
        raise BundleInputError(
            f"no TIFF/OME-TIFF/NIfTI stacks ({', '.join(INPUT_SUFFIXES)}) or DICOM series folders in {str(root)!r}."
        )
    names = output_names(files)
    items = [
        {"image": str(f), "structure": s, OUTPUT_NAME_KEY: n} for f, n in zip(files, names) for s in predict
    ]
    # e.g. stem "a_b" with structure "c" and stem "a" with structure "b_c"
    _refuse_clashes(
        [f"{i[OUTPUT_NAME_KEY]}_{i['structure']}" for i in items],
        [f"{i['image']} ({i['structure']})" for i in items],
        "predictions",
    )
    return items
