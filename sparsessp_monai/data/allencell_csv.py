"""
AllenCell label-free CSVs and RepMode's splits.

Input: AllenCell-style CSVs with the columns ``path_czi``, ``channel_signal`` and ``channel_target`` (one CSV per
structure, e.g. RepMode's ``data/csvs/<structure>.csv``), read into :class:`ImageRecord` rows.

Splits follow RepMode's scripts (``scripts/python/split_dataset.py``, ``split_dataset_val.py`` and
``make_dataset.py``):

* per structure, the rows are shuffled with ``numpy.random.RandomState(42)`` (``DataFrame.sample(frac=1)`` is
  ``RandomState.permutation``), the first ``round(0.75 n)`` are train+val and the rest test; the train+val rows are
  shuffled again with a fresh ``RandomState(42)`` and the first ``round(0.9 m)`` are train, the rest validation;
* the DNA set is not split on its own: for each split, the rows of the other structures in that split are
  concatenated (in alphabetical structure order), shuffled with a fresh ``RandomState(42)``, the row order is
  shuffled once more with the same generator, and the DNA CSV rows with the same ``path_czi`` (the DNA channel of
  those very images) are taken in that order, up to 54 / 6 / 20 images for train / val / test. A DNA image
  therefore always sits in the same split as the image it comes from.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_SOURCE_SPACING_ZYX",
    "REPMODE_DNA_COUNTS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "TARGET_XY_UM",
    "ImageRecord",
    "find_structure_csvs",
    "read_allencell_csv",
    "repmode_dna_split",
    "repmode_split",
]

#: AllenCell 100x voxel size (z, y, x) in micrometres, used when a file does not record it
DEFAULT_SOURCE_SPACING_ZYX: tuple[float, float, float] = (0.29, 0.108, 0.108)
#: lateral pixel size of the prepared data (RepMode / SparseSSP), micrometres
TARGET_XY_UM: float = 0.29
#: DNA images drawn per split by RepMode's ``make_dna_dataset.sh``
REPMODE_DNA_COUNTS: dict[str, int] = {"training": 54, "validation": 6, "test": 20}
#: datalist keys, in the order they are written
SPLITS: tuple[str, ...] = ("training", "validation", "test")
REQUIRED_COLUMNS: tuple[str, ...] = ("path_czi", "channel_signal", "channel_target")



@dataclass(frozen=True)
class ImageRecord:
    """One CSV row: which file, which channels, for which structure.

    Attributes:
        structure: structure (dataset) name, e.g. ``"tom20"``.
        path_czi: the ``path_czi`` value as written in the CSV (the key that ties DNA rows to their source image).
        path: the resolved file path.
        channel_signal: index of the transmitted-light channel.
        channel_target: index of the fluorescence channel, or None when the row has no target.
        row: the CSV row as read (all columns, strings).
    """

    structure: str
    path_czi: str
    path: Path
    channel_signal: int
    channel_target: int | None
    row: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


# ----------------------------------------------------------------------------------------------------------------------
# CSVs
# ----------------------------------------------------------------------------------------------------------------------


def _channel(value: str, column: str, where: str, allow_missing: bool) -> int | None:
    text = (value or "").strip()
    if text == "" or text.lower() == "nan":
        if allow_missing:
            return None
        raise ValueError(f"{where}: column {column!r} is empty.")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} must be a channel index, got {text!r}.") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{where}: column {column!r} must be a non-negative integer channel index, got {text!r}.")
    return int(number)


def _resolve_image_path(path_czi: str, csv_dir: Path, data_root: Path | None) -> Path:
    """Where the file of a ``path_czi`` value is: absolute as is; else under ``data_root`` (or the CSV's folder).

    RepMode's CSVs say ``data/<structure>/<name>.czi`` and RepMode replaces the leading ``data`` by its
    ``--path_dataset_czi``; the same is tried here when the path does not exist as written.
    """
    p = Path(path_czi)
    if p.is_absolute():
        return p
    root = data_root if data_root is not None else csv_dir
    candidates = [root / p]
    if p.parts and p.parts[0] == "data":
        candidates.append(root.joinpath(*p.parts[1:]))
    return next((c for c in candidates if c.exists()), candidates[0])


def read_allencell_csv(
    csv_file: str | os.PathLike, structure: str | None = None, data_root: str | os.PathLike | None = None
) -> list[ImageRecord]:
    """Read one AllenCell-style CSV (columns ``path_czi``, ``channel_signal``, ``channel_target``).

    Args:
        csv_file: the CSV.
        structure: structure name; default the CSV's file name without extension (RepMode's convention).
        data_root: folder relative ``path_czi`` values are resolved against; default the CSV's folder.

    Returns:
        One record per row, in file order.

    Raises:
        ValueError: missing file or columns, empty CSV, bad channel index, duplicated ``path_czi``.
    """
    path = Path(csv_file)
    if not path.is_file():
        raise ValueError(f"CSV file {str(path)!r} does not exist.")
    name = structure or path.name.split(".")[0]
    root = Path(data_root) if data_root is not None else None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; AllenCell CSVs need {list(REQUIRED_COLUMNS)}.")
        records: list[ImageRecord] = []
        seen: set[str] = set()
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            path_czi = (row["path_czi"] or "").strip()
            if not path_czi:
                raise ValueError(f"{where}: column 'path_czi' is empty.")
            if path_czi in seen:
                raise ValueError(f"{where}: {path_czi!r} is listed twice.")
            seen.add(path_czi)
            records.append(
                ImageRecord(
                    structure=name,
                    path_czi=path_czi,
                    path=_resolve_image_path(path_czi, path.parent, root),
                    channel_signal=_channel(row["channel_signal"], "channel_signal", where, allow_missing=False),
                    channel_target=_channel(row["channel_target"], "channel_target", where, allow_missing=True),
                    row=dict(row),
                )
            )
    if not records:
        raise ValueError(f"{path}: the CSV has no rows.")
    return records


def find_structure_csvs(folder: str | os.PathLike) -> dict[str, Path]:
    """The per-structure CSVs of a folder laid out like RepMode's ``data/csvs`` (``<structure>.csv``), by name.

    Raises:
        ValueError: the folder does not exist or holds no CSV.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"CSV folder {str(root)!r} does not exist.")
    found = {p.name[: -len(".csv")]: p for p in sorted(root.iterdir()) if p.is_file() and p.name.endswith(".csv")}
    if not found:
        raise ValueError(f"no <structure>.csv files in {str(root)!r}.")
    return found


# ----------------------------------------------------------------------------------------------------------------------
# splits (RepMode)
# ----------------------------------------------------------------------------------------------------------------------


def _split_head(items: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """RepMode's split: shuffle with a fresh ``RandomState(seed)``, first ``round(fraction * n)`` go left."""
    order = np.random.RandomState(seed).permutation(len(items))
    shuffled = [items[i] for i in order]
    cut = round(len(items) * fraction)
    return shuffled[:cut], shuffled[cut:]


def repmode_split(
    records: Sequence[Any], seed: int = 42, train_fraction: float = 0.75, train_val_fraction: float = 0.9
) -> dict[str, list[Any]]:
    """Split one structure's rows like RepMode: 75/25 train/test, then 10% of train as validation.

    Args:
        records: the rows of one structure, in CSV order.
        seed: RepMode uses 42 for both shuffles (a fresh generator each).
        train_fraction: share of the rows for train + validation.
        train_val_fraction: share of those that stay in train.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, disjoint and covering ``records``.
    """
    if not 0.0 <= train_fraction <= 1.0 or not 0.0 <= train_val_fraction <= 1.0:
        raise ValueError(f"split fractions must lie in [0, 1], got {train_fraction} and {train_val_fraction}.")
    train_val, test = _split_head(list(records), train_fraction, seed)
    train, val = _split_head(train_val, train_val_fraction, seed)
    return {"training": train, "validation": val, "test": test}


def repmode_dna_split(
    dna_records: Sequence[ImageRecord],
    source_splits: Mapping[str, Mapping[str, Sequence[ImageRecord]]],
    counts: Mapping[str, int | None] | None = None,
    seed: int = 42,
) -> dict[str, list[ImageRecord]]:
    """Draw the DNA set from the images of the other structures, split by split, like RepMode's
    ``make_dataset.py``.

    Args:
        dna_records: the rows of the DNA CSV (the DNA channel of images of the other structures).
        source_splits: ``{structure: {"training": [...], "validation": [...], "test": [...]}}`` for the other
            structures; they are concatenated in alphabetical structure order, as RepMode's default list is.
        counts: images per split (RepMode: 54 / 6 / 20); None, or a None entry, takes every match.
        seed: seed of the fresh ``RandomState`` used for each split.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` of DNA records; a DNA image is in the split
        of the image it comes from, so the splits are disjoint.
    """
    counts = dict(REPMODE_DNA_COUNTS) if counts is None else dict(counts)
    by_path: dict[str, ImageRecord] = {r.path_czi: r for r in dna_records}
    out: dict[str, list[ImageRecord]] = {}
    for split in SPLITS:
        pool = [r for name in sorted(source_splits) for r in source_splits[name].get(split, [])]
        rng = np.random.RandomState(seed)
        shuffled = [pool[i] for i in rng.permutation(len(pool))]  # DataFrame.sample(frac=1, random_state=rng)
        idxs = np.arange(len(shuffled))
        rng.shuffle(idxs)
        limit = counts.get(split)
        chosen: list[ImageRecord] = []
        for i in idxs:
            if limit is not None and len(chosen) >= limit:
                break
            match = by_path.get(shuffled[i].path_czi)
            if match is not None:
                chosen.append(match)
        out[split] = chosen
    return out

