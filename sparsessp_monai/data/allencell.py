"""
Prepare AllenCell label-free data (as used by RepMode and SparseSSP) for the bundle: :func:`prepare_allencell`.

Input: AllenCell-style CSVs with the columns ``path_czi``, ``channel_signal`` and ``channel_target`` (one CSV per
structure, e.g. RepMode's ``data/csvs/<structure>.csv``; :mod:`~sparsessp_monai.data.allencell_csv`, which also
holds RepMode's splits). Every image is read, its transmitted-light (signal) and fluorescence (target) channels
are z-scored per image, resampled in XY from 0.108 to 0.29 um/px with anti-aliasing (Z unchanged), and written
as OME-TIFF with ``PhysicalSizeX/Y/Z`` beside a Decathlon datalist JSON and a ``manifest.csv``
(:mod:`~sparsessp_monai.data.allencell_prepare`).

RepMode's formatted ``train.pth`` / ``val.pth`` / ``test.pth`` (already normalised and resampled) can be imported
into the same layout with :func:`import_repmode_pth` (:mod:`~sparsessp_monai.data.repmode`); they are pickles, so
loading them needs an explicit opt-in.

Every public name of those modules is importable from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .allencell_csv import (
    DEFAULT_SOURCE_SPACING_ZYX,
    REPMODE_DNA_COUNTS,
    REQUIRED_COLUMNS,
    SPLITS,
    TARGET_XY_UM,
    ImageRecord,
    find_structure_csvs,
    read_allencell_csv,
    repmode_dna_split,
    repmode_split,
)
from .allencell_prepare import file_stem, read_channels, resample_xy, write_prepared_dataset, zscore
from .repmode import import_repmode_pth

__all__ = [
    "DEFAULT_SOURCE_SPACING_ZYX",
    "REPMODE_DNA_COUNTS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "TARGET_XY_UM",
    "ImageRecord",
    "find_structure_csvs",
    "import_repmode_pth",
    "prepare_allencell",
    "read_allencell_csv",
    "read_channels",
    "repmode_dna_split",
    "repmode_split",
    "resample_xy",
    "zscore",
]


def prepare_allencell(
    csv_files: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    dna_name: str = "dna",
    dna_counts: Mapping[str, int | None] | None = None,
    seed: int = 42,
    source_spacing_zyx: Sequence[float] | None = None,
    target_xy: float = TARGET_XY_UM,
    overwrite: bool = False,
) -> Path:
    """Prepare AllenCell images listed in per-structure CSVs into OME-TIFF volumes and a datalist JSON.

    Args:
        csv_files: CSV files (structure name = file name without ``.csv``) or one folder of them (RepMode's
            ``data/csvs``).
        out_dir: output folder (must not be an input folder; created, staged and moved into place at the end).
        data_root: folder relative ``path_czi`` values are resolved against (RepMode's ``--path_dataset_czi``);
            default each CSV's folder.
        dna_name: the structure whose images are the DNA channel of the other structures' images; its split is
            drawn from theirs (:func:`repmode_dna_split`). If it is the only structure it is split on its own.
        dna_counts: DNA images per split; default RepMode's 54 / 6 / 20 (fewer when fewer match).
        seed: split seed (RepMode: 42).
        source_spacing_zyx: voxel size (sz, sy, sx) in um of the raw images; default the file's own, else
            AllenCell's (0.29, 0.108, 0.108). Given explicitly it wins over the files.
        target_xy: lateral pixel size of the output in um (Z is never resampled).
        overwrite: replace a non-empty ``out_dir`` (only once everything else has been written).

    Returns:
        The path of ``datalist.json`` in ``out_dir``.

    Raises:
        ValueError: bad CSVs, missing or unreadable images, inconsistent voxel sizes, output overlapping inputs.
    """
    csvs = _structure_csvs(csv_files)
    records = {name: read_allencell_csv(p, name, data_root) for name, p in csvs.items()}
    missing = [str(r.path) for rs in records.values() for r in rs if not r.path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} image file(s) listed in the CSVs do not exist: {shown}.")
    others = {n: repmode_split(rs, seed=seed) for n, rs in records.items() if n != dna_name}
    splits = _all_splits(records, others, dna_name, dna_counts, seed)
    source = None if source_spacing_zyx is None else [float(v) for v in source_spacing_zyx]
    if source is not None and (len(source) != 3 or not all(v > 0 and math.isfinite(v) for v in source)):
        raise ValueError(f"source_spacing_zyx must be three positive numbers, got {source_spacing_zyx!r}.")

    def load(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
        return _load_record(entry["record"], source, target_xy)

    entries = {
        s: [{"structure": r.structure, "stem": file_stem(r.path_czi), "record": r, "source": r.path_czi} for r in rs]
        for s, rs in splits.items()
    }
    inputs = [*csvs.values(), *(r.path for rs in records.values() for r in rs)]
    if data_root is not None:
        inputs.append(Path(data_root))

    return write_prepared_dataset(
        Path(out_dir),
        entries,
        sorted(records),
        f"z-scored per image, XY resampled to {target_xy:g} um/px, Z unchanged; RepMode splits (seed {seed})",
        {"split": {"seed": seed, "train_fraction": 0.75, "val_fraction_of_train": 0.1, "dna_from": sorted(others)}},
        inputs,
        overwrite,
        load,
    )


def _structure_csvs(csv_files: Sequence[str | os.PathLike] | str | os.PathLike) -> dict[str, Path]:
    # one folder of <structure>.csv, or CSV files named after their structure
    if isinstance(csv_files, (str, os.PathLike)) and Path(csv_files).is_dir():
        return find_structure_csvs(csv_files)
    paths = [Path(csv_files)] if isinstance(csv_files, (str, os.PathLike)) else [Path(p) for p in csv_files]
    if not paths:
        raise ValueError("no CSV files given.")
    csvs: dict[str, Path] = {}
    for p in paths:
        name = p.name.split(".")[0]
        if name in csvs:
            raise ValueError(f"two CSVs for structure {name!r}: {csvs[name]} and {p}.")
        csvs[name] = p
    return csvs


def _all_splits(
    records: Mapping[str, Sequence[ImageRecord]],
    others: Mapping[str, Mapping[str, Sequence[ImageRecord]]],
    dna_name: str,
    dna_counts: Mapping[str, int | None] | None,
    seed: int,
) -> dict[str, list[ImageRecord]]:
    # the other structures' splits in alphabetical order, then the DNA rows drawn from them (or split alone)
    splits: dict[str, list[ImageRecord]] = {s: [r for n in sorted(others) for r in others[n][s]] for s in SPLITS}
    if dna_name in records:
        dna = (
            repmode_dna_split(records[dna_name], others, dna_counts, seed)
            if others
            else repmode_split(records[dna_name], seed=seed)
        )
        for s in SPLITS:
            splits[s].extend(dna[s])
    for s in ("training", "validation"):
        no_target = [r.path_czi for r in splits[s] if r.channel_target is None]
        if no_target:
            raise ValueError(f"{len(no_target)} {s} row(s) have no channel_target, e.g. {no_target[0]!r}.")
    return splits


def _load_record(
    rec: ImageRecord, source: list[float] | None, target_xy: float
) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
    # signal (and target) of one CSV row, z-scored and resampled, with the prepared voxel size
    channels = [rec.channel_signal] + ([] if rec.channel_target is None else [rec.channel_target])
    volumes, file_spacing = read_channels(rec.path, channels)
    spacing = source or [f if f is not None else d for f, d in zip(file_spacing, DEFAULT_SOURCE_SPACING_ZYX)]
    if abs(spacing[1] - spacing[2]) > 1e-6 * spacing[1]:
        raise ValueError(f"{rec.path}: anisotropic pixels {spacing[1]} x {spacing[2]} um are not supported.")
    # RepMode's order: z-score the raw channel, then resample it
    out = [resample_xy(zscore(v, f"{rec.path} channel {c}"), spacing[1], target_xy) for v, c in zip(volumes, channels)]
    return out[0], (out[1] if len(out) > 1 else None), [spacing[0], target_xy, target_xy]
