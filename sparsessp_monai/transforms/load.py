"""
Loading what the user points the bundle at, with errors that name the file and the problem.

MONAI's ``LoadImage`` tries every registered reader in turn and, when all fail, raises "cannot find a suitable
reader ... install the reader libraries" with every reader's traceback in the message, so the reason a TIFF is
unreadable (truncated, not a TIFF at all, 2D) is buried. :class:`LoadVolume` hands TIFF and NIfTI names straight
to their reader, whose own error then reaches the user; :func:`load_datalist` checks a training datalist before
anything is cached or trained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import NibabelReader, load_decathlon_datalist
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImage, LoadImaged
from monai.utils import ensure_tuple

from sparsessp_monai.engines.errors import BundleInputError, InputFileNotFoundError
from sparsessp_monai.io import TIFF_SUFFIXES, TiffReader

__all__ = ["NIFTI_SUFFIXES", "LoadVolume", "LoadVolumed", "is_nifti_name", "load_datalist"]

NIFTI_SUFFIXES: tuple[str, ...] = ("nii", "nii.gz")
"""File name endings read as NIfTI (lower case, without the leading dot)."""


def _has_suffix(name: PathLike, suffixes: Sequence[str]) -> bool:
    lower = os.fspath(name).lower()
    return any(lower.endswith(f".{s}") for s in suffixes)


def is_nifti_name(name: PathLike) -> bool:
    """Whether a file name ends in one of :data:`NIFTI_SUFFIXES`."""
    return _has_suffix(name, NIFTI_SUFFIXES)


class LoadVolume(LoadImage):
    """
    ``LoadImage`` that reads TIFF names with :class:`~sparsessp_monai.io.TiffReader` and NIfTI names with
    ``NibabelReader`` directly (other names go through ``LoadImage``'s usual search), so that a broken file is
    reported with its reader's reason in one line.

    Args: as ``LoadImage``; ``reader`` defaults to :class:`~sparsessp_monai.io.TiffReader`.

    Raises:
        sparsessp_monai.engines.errors.InputFileNotFoundError: a file that does not exist.
        sparsessp_monai.engines.BundleInputError: a file its reader cannot read (the message names the file and
            the reader's reason), or a file no reader understands.
    """

    def __init__(self, reader: Any = TiffReader, *args: Any, **kwargs: Any) -> None:
        super().__init__(reader, *args, **kwargs)

    def reader_for(self, names: Sequence[str]) -> ImageReader | None:
        """The registered reader for these file names by their ending, or ``None`` to let ``LoadImage`` search."""
        for kind, suffixes in ((TiffReader, TIFF_SUFFIXES), (NibabelReader, NIFTI_SUFFIXES)):
            if all(_has_suffix(n, suffixes) for n in names):
                return next((r for r in self.readers if isinstance(r, kind)), None)
        return None

    def __call__(self, filename: Sequence[PathLike] | PathLike, reader: ImageReader | None = None) -> Any:
        names = [os.fspath(n) for n in ensure_tuple(filename)]
        for name in names:
            if not os.path.exists(os.path.expanduser(name)):
                raise InputFileNotFoundError(f"input file not found: {name}")
        reader = reader or self.reader_for(names)
        try:
            return super().__call__(filename, reader)
        except BundleInputError:
            raise
        except Exception as exc:
            if isinstance(reader, TiffReader):
                raise  # TiffReader reports unreadable files itself: anything else is a bug
            if reader is None:  # LoadImage's message would list every reader's traceback
                raise BundleInputError(
                    f"cannot read {names[0]}: no installed reader understands it (TIFF, NIfTI, PNG/JPEG and NumPy "
                    "files are read)."
                ) from exc
            # nibabel's first line is the reason ("Cannot work out file type", "Not a gzipped file")
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleInputError(f"cannot read NIfTI file {names[0]}: {reason}") from exc


class LoadVolumed(LoadImaged):
    """
    Dictionary version of :class:`LoadVolume`: ``LoadImaged`` whose unreadable files are reported in one line
    naming the file and the problem.

    Args:
        keys: keys of the file names to load.
        reader: the reader tried first for names with other endings (default ``TiffReader``).
        dtype: data type of the loaded arrays.
        ensure_channel_first: make the data channel first, ``(C, S0, S1, S2)``.
        image_only: return ``MetaTensor`` only (no separate meta dict).
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reader: Any = TiffReader,
        dtype: DtypeLike = np.float32,
        ensure_channel_first: bool = True,
        image_only: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            reader=reader,
            dtype=dtype,
            ensure_channel_first=ensure_channel_first,
            image_only=image_only,
            allow_missing_keys=allow_missing_keys,
        )
        self._loader = LoadVolume(
            reader, image_only=image_only, dtype=dtype, ensure_channel_first=ensure_channel_first
        )


def load_datalist(
    datalist_file: PathLike,
    split: str,
    base_dir: PathLike | None = None,
    check_splits: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The ``split`` list of a Decathlon-style datalist (``monai.data.load_decathlon_datalist``), checked.

    Args:
        datalist_file: the JSON datalist.
        split: the list to return, e.g. ``"training"`` or ``"validation"``.
        base_dir: folder the relative file names are relative to (default: the datalist's folder).
        check_splits: other lists that must be present and non-empty too, so that a training run with an empty
            validation list is refused before it caches or trains anything.

    Returns:
        The items of ``split`` with ``image`` / ``label`` as absolute paths.

    Raises:
        sparsessp_monai.engines.errors.InputFileNotFoundError: the datalist, or a file it lists, does not exist.
        sparsessp_monai.engines.BundleInputError: the datalist is not JSON, lacks a list, or a list is empty.
    """
    path = Path(datalist_file)
    if not path.is_file():
        raise InputFileNotFoundError(f"datalist file not found: {path}")
    lists = {}
    for name in dict.fromkeys([split, *check_splits]):
        try:
            items = load_decathlon_datalist(path, is_segmentation=True, data_list_key=name, base_dir=base_dir)
        except json.JSONDecodeError as exc:
            raise BundleInputError(f"{path}: not valid JSON ({exc}).") from exc
        except ValueError as exc:  # load_decathlon_datalist's "Data list X not specified"
            raise BundleInputError(f"{path}: no {name!r} list ({exc}).") from exc
        if not items:
            raise BundleInputError(f"{path}: the {name!r} list is empty; at least one item is needed.")
        lists[name] = items
    for i, item in enumerate(lists[split]):
        for key in ("image", "label"):
            for name in ensure_tuple(item.get(key, ())):
                if not os.path.exists(name):
                    raise InputFileNotFoundError(f"{path}: {split} item {i}: {key} file not found: {name}")
    return lists[split]
