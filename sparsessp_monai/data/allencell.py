"""
Prepare AllenCell label-free data (as used by RepMode and SparseSSP) for the bundle.

Input: AllenCell-style CSVs with the columns ``path_czi``, ``channel_signal`` and ``channel_target`` (one CSV per
structure, e.g. RepMode's ``data/csvs/<structure>.csv``). Every image is read (CZI through the optional ``bioio``
extra, TIFF/OME-TIFF through tifffile), its transmitted-light (signal) and fluorescence (target) channels are
z-scored per image, resampled in XY from 0.108 to 0.29 um/px with anti-aliasing (Z unchanged), and written as
OME-TIFF with ``PhysicalSizeX/Y/Z``. A Decathlon datalist JSON (``training`` / ``validation`` / ``test``, items
``{image, label, structure}`` relative to the output folder) and a ``manifest.csv`` with the provenance of every
file are written beside them.

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

RepMode's formatted ``train.pth`` / ``val.pth`` / ``test.pth`` (already normalised and resampled) can be imported
into the same layout with :func:`import_repmode_pth`; they are pickles, so loading them needs an explicit opt-in.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_SOURCE_SPACING_ZYX",
    "REPMODE_DNA_COUNTS",
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

#: AllenCell 100x voxel size (z, y, x) in micrometres, used when a file does not record it
DEFAULT_SOURCE_SPACING_ZYX: tuple[float, float, float] = (0.29, 0.108, 0.108)
#: lateral pixel size of the prepared data (RepMode / SparseSSP), micrometres
TARGET_XY_UM: float = 0.29
#: DNA images drawn per split by RepMode's ``make_dna_dataset.sh``
REPMODE_DNA_COUNTS: dict[str, int] = {"training": 54, "validation": 6, "test": 20}
#: datalist keys, in the order they are written
SPLITS: tuple[str, ...] = ("training", "validation", "test")
REQUIRED_COLUMNS: tuple[str, ...] = ("path_czi", "channel_signal", "channel_target")
# RepMode's file names per split
_PTH_FILES = {"training": "train.pth", "validation": "val.pth", "test": "test.pth"}
_READABLE = (".czi", ".ome.tif", ".ome.tiff", ".tif", ".tiff")


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


# ----------------------------------------------------------------------------------------------------------------------
# per-image processing
# ----------------------------------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    lower = path.name.lower()
    return next((s for s in _READABLE if lower.endswith(s)), "")


def _read_czi(path: Path, channels: Sequence[int]) -> tuple[list[np.ndarray], list[float | None]]:
    try:
        from bioio import BioImage  # optional extra: imported only when a CZI is actually read
    except ImportError:
        raise ValueError(
            f"{path}: reading CZI files needs bioio and bioio-czi: install sparsessp_monai[czi] "
            "(pip install 'sparsessp_monai[czi]')."
        ) from None
    try:
        img = BioImage(str(path))
        n_channels = int(img.dims.C)
        bad = [c for c in channels if c >= n_channels]
        if bad:
            raise ValueError(f"{path}: channel(s) {bad} requested but the file has {n_channels} channel(s).")
        volumes = [np.asarray(img.get_image_data("ZYX", T=0, C=int(c))) for c in channels]
        sizes = img.physical_pixel_sizes  # (Z, Y, X) in micrometres, None where unknown
        spacing = [None if s is None else float(s) for s in (sizes.Z, sizes.Y, sizes.X)]
    except ValueError:
        raise
    except Exception as exc:  # bioio raises many types for unreadable files; name the file
        raise ValueError(f"cannot read CZI file {path}: {type(exc).__name__}: {exc}") from exc
    return volumes, spacing


def read_channels(path: str | os.PathLike, channels: Sequence[int]) -> tuple[list[np.ndarray], list[float | None]]:
    """Read channels of a CZI / TIFF / OME-TIFF file as (Z, Y, X) arrays with the file's voxel size.

    Args:
        path: image file.
        channels: channel indices to read.

    Returns:
        ``(volumes, spacing_zyx)``: one array per requested channel and the voxel size (sz, sy, sx) in
        micrometres, None where the file does not say.

    Raises:
        ValueError: missing or unreadable file, unsupported format, channel out of range, CZI without the extra.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image file {str(p)!r} does not exist.")
    kind = _suffix(p)
    if kind == ".czi":
        return _read_czi(p, channels)
    if not kind:
        raise ValueError(f"{p}: unsupported format; expected one of {', '.join(_READABLE)}.")
    from sparsessp_monai.io import read_ome_tiff

    data, meta = read_ome_tiff(p)
    bad = [c for c in channels if c >= data.shape[0]]
    if bad:
        raise ValueError(f"{p}: channel(s) {bad} requested but the file has {data.shape[0]} channel(s).")
    return [data[c] for c in channels], list(meta["spacing_zyx"])


def zscore(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    """Per-image z-score (mean 0, standard deviation 1 over the whole volume), as float32.

    Raises:
        ValueError: NaN/Inf values or a constant volume (its standard deviation is 0).
    """
    arr = np.asarray(volume, dtype=np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{name}: the volume is empty or contains NaN/Inf values.")
    std = float(arr.std())
    if not std > 0:
        raise ValueError(f"{name}: the volume is constant, so it cannot be z-scored.")
    return ((arr - arr.mean()) / std).astype(np.float32)


def resample_xy(volume: np.ndarray, source_xy: float, target_xy: float = TARGET_XY_UM) -> np.ndarray:
    """Resample the Y and X axes of a (Z, Y, X) volume from ``source_xy`` to ``target_xy`` pixels; Z is unchanged.

    The new size is ``round(n * source_xy / target_xy)`` per axis (what ``scipy.ndimage.zoom`` gives for RepMode's
    factor 0.37241). Every slice is resized with MONAI's ``Resize`` (bilinear) with Gaussian anti-aliasing before
    downsampling (sigma = (1/factor - 1) / 2 pixels, as in ``skimage.transform.resize``); slices are treated as
    channels so nothing mixes across Z.

    Raises:
        ValueError: not a 3D volume, non-positive pixel sizes, or a size that would drop to zero.
    """
    from monai.transforms import Resize

    arr = np.asarray(volume, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"resample_xy expects a (Z, Y, X) volume, got shape {arr.shape}.")
    if not (source_xy > 0 and target_xy > 0 and math.isfinite(source_xy) and math.isfinite(target_xy)):
        raise ValueError(f"pixel sizes must be positive, got source {source_xy} and target {target_xy}.")
    factor = source_xy / target_xy
    size = tuple(round(n * factor) for n in arr.shape[1:])
    if min(size) < 1:
        raise ValueError(f"resampling {arr.shape[1:]} by {factor:.4f} leaves no pixels.")
    if size == arr.shape[1:]:
        return arr
    resize = Resize(spatial_size=size, mode="bilinear", anti_aliasing=True, dtype=torch.float32)
    out = resize(torch.from_numpy(np.ascontiguousarray(arr)))
    return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# staged output folder
# ----------------------------------------------------------------------------------------------------------------------


def _check_output_dir(out_dir: Path, inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse an output folder that is, holds or sits inside an input, or holds files already (unless asked)."""
    out = out_dir.resolve()
    for inp in inputs:
        src = inp.resolve()
        folder = src if src.is_dir() else src.parent
        if out == folder or folder in out.parents or out in src.parents or out == src:
            raise ValueError(
                f"output folder {str(out_dir)!r} overlaps the input {str(inp)!r}; choose a folder outside the inputs "
                "(inputs are never written)."
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {str(out_dir)!r} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"output folder {str(out_dir)!r} is not empty; pass overwrite=True (CLI: --overwrite) to replace it."
        )


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the finished staging folder into place (replacing an older output only now that all is written)."""
    out = out_dir.resolve()
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _staging_dir(out_dir: Path) -> Path:
    out = out_dir.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent / f".{out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _write_bundle(
    out_dir: Path,
    entries: Mapping[str, Sequence[dict[str, Any]]],
    structures: Sequence[str],
    description: str,
    extra: Mapping[str, Any],
    inputs: Iterable[Path],
    overwrite: bool,
    load: Any,
) -> Path:
    """Write every entry's volumes and the datalist into a staging folder, then move it to ``out_dir``.

    ``load(entry)`` returns ``(signal, target or None, spacing_zyx)``; every entry must have the same spacing.
    """
    from sparsessp_monai.io import write_ome_tiff

    _check_output_dir(out_dir, inputs, overwrite)
    staging = _staging_dir(out_dir)
    try:
        datalist: dict[str, Any] = {
            "name": "AllenCell label-free (SparseSSP)",
            "description": description,
            "structures": list(structures),
            "spacing_zyx_um": None,
            **extra,
        }
        manifest: list[dict[str, Any]] = []
        for split in SPLITS:
            items = []
            for k, entry in enumerate(entries.get(split, [])):
                structure = entry["structure"]
                stem = f"{structure}/{split}_{k:03d}_{entry['stem']}"
                signal, target, spacing_zyx = load(entry)
                spacing_zyx = [float(v) for v in spacing_zyx]
                if datalist["spacing_zyx_um"] is None:
                    datalist["spacing_zyx_um"] = spacing_zyx
                elif not np.allclose(spacing_zyx, datalist["spacing_zyx_um"], rtol=1e-6):
                    raise ValueError(
                        f"{entry.get('source')}: voxel size {spacing_zyx} um differs from the other images' "
                        f"{datalist['spacing_zyx_um']}; one dataset needs one voxel size (pass the source spacing)."
                    )
                image = f"images/{stem}_signal.ome.tif"
                write_ome_tiff(staging / image, signal, spacing_zyx, channel_names=["signal"])
                item = {"image": image, "structure": structure}
                if target is not None:
                    item["label"] = f"images/{stem}_target.ome.tif"
                    write_ome_tiff(staging / item["label"], target, spacing_zyx, channel_names=[structure])
                items.append(item)
                manifest.append({"split": split, **item, "source": entry.get("source", "")})
            datalist[split] = items
        (staging / "datalist.json").write_text(json.dumps(datalist, indent=2))
        with open(staging / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["split", "structure", "image", "label", "source"])
            writer.writeheader()
            writer.writerows({**{"label": ""}, **row} for row in manifest)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "datalist.json"


def _stem(path_czi: str) -> str:
    name = Path(path_czi).name
    for suffix in _READABLE:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


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
    if isinstance(csv_files, (str, os.PathLike)) and Path(csv_files).is_dir():
        csvs = find_structure_csvs(csv_files)
    else:
        paths = [Path(csv_files)] if isinstance(csv_files, (str, os.PathLike)) else [Path(p) for p in csv_files]
        if not paths:
            raise ValueError("no CSV files given.")
        csvs = {}
        for p in paths:
            name = p.name.split(".")[0]
            if name in csvs:
                raise ValueError(f"two CSVs for structure {name!r}: {csvs[name]} and {p}.")
            csvs[name] = p
    records = {name: read_allencell_csv(p, name, data_root) for name, p in csvs.items()}
    missing = [str(r.path) for rs in records.values() for r in rs if not r.path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} image file(s) listed in the CSVs do not exist: {shown}.")

    others = {n: repmode_split(rs, seed=seed) for n, rs in records.items() if n != dna_name}
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

    source = None if source_spacing_zyx is None else [float(v) for v in source_spacing_zyx]
    if source is not None and (len(source) != 3 or not all(v > 0 and math.isfinite(v) for v in source)):
        raise ValueError(f"source_spacing_zyx must be three positive numbers, got {source_spacing_zyx!r}.")

    def load(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
        rec: ImageRecord = entry["record"]
        channels = [rec.channel_signal] + ([] if rec.channel_target is None else [rec.channel_target])
        volumes, file_spacing = read_channels(rec.path, channels)
        spacing = source or [f if f is not None else d for f, d in zip(file_spacing, DEFAULT_SOURCE_SPACING_ZYX)]
        if abs(spacing[1] - spacing[2]) > 1e-6 * spacing[1]:
            raise ValueError(f"{rec.path}: anisotropic pixels {spacing[1]} x {spacing[2]} um are not supported.")
        # RepMode's order: z-score the raw channel, then resample it
        out = [
            resample_xy(zscore(v, f"{rec.path} channel {c}"), spacing[1], target_xy) for v, c in zip(volumes, channels)
        ]
        return out[0], (out[1] if len(out) > 1 else None), [spacing[0], target_xy, target_xy]

    entries = {
        s: [{"structure": r.structure, "stem": _stem(r.path_czi), "record": r, "source": r.path_czi} for r in splits[s]]
        for s in SPLITS
    }
    inputs = [*csvs.values(), *(r.path for rs in records.values() for r in rs)]
    if data_root is not None:
        inputs.append(Path(data_root))

    return _write_bundle(
        Path(out_dir),
        entries,
        sorted(records),
        f"z-scored per image, XY resampled to {target_xy:g} um/px, Z unchanged; RepMode splits (seed {seed})",
        {"split": {"seed": seed, "train_fraction": 0.75, "val_fraction_of_train": 0.1, "dna_from": sorted(others)}},
        inputs,
        overwrite,
        load,
    )


# ----------------------------------------------------------------------------------------------------------------------
# RepMode .pth import
# ----------------------------------------------------------------------------------------------------------------------


def _as_zyx(t: Any, where: str) -> np.ndarray:
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{where}: expected a (1, Z, Y, X) volume, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise ValueError(f"{where}: the volume is not numeric or contains NaN/Inf values.")
    return arr.astype(np.float32, copy=False)


def _load_pth(path: Path) -> dict[str, Any]:
    try:
        # RepMode's files hold a pandas DataFrame and Python dicts, which only a full unpickle restores
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"{path}: loading it needs the Python module {exc.name!r} (RepMode stores a pandas DataFrame); "
            f"install it (pip install {exc.name})."
        ) from exc
    except Exception as exc:
        raise ValueError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(blob, dict) or not isinstance(blob.get("data"), (list, tuple)):
        raise ValueError(f"{path}: not a RepMode dataset file (expected a dict with a 'data' list).")
    return blob


def import_repmode_pth(
    pth_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    allow_pickle: bool = False,
    spacing_zyx: Sequence[float] = (DEFAULT_SOURCE_SPACING_ZYX[0], TARGET_XY_UM, TARGET_XY_UM),
    overwrite: bool = False,
) -> Path:
    """Import RepMode's formatted ``train.pth`` / ``val.pth`` / ``test.pth`` into the prepared layout.

    Each file is what RepMode's ``SSPDataset`` saves: ``{"adopted_datasets_loaded": [names], "df": DataFrame,
    "data": [{"info": {"dataset": name, "path_czi": ..., ...}, "imgs": [signal, target]}]}`` with (1, Z, Y, X)
    float tensors already z-scored and resampled to 0.29 um/px; they are written unchanged.

    These files are Python pickles: loading one can run arbitrary code, so it is refused unless
    ``allow_pickle=True`` (CLI: ``--allow-pickle``). Only pass it for files you made or trust. Reading the
    ``df`` entry needs pandas installed.

    Args:
        pth_dir: folder with at least one of ``train.pth``, ``val.pth``, ``test.pth``.
        out_dir: output folder.
        allow_pickle: explicit opt-in to unpickle the files.
        spacing_zyx: voxel size written to the OME-TIFFs (not stored in the .pth files).
        overwrite: replace a non-empty ``out_dir``.

    Returns:
        The path of ``datalist.json`` in ``out_dir``.

    Raises:
        ValueError: no opt-in, no files, unreadable files, or entries that are not RepMode's layout.
    """
    root = Path(pth_dir)
    files = {s: root / n for s, n in _PTH_FILES.items() if (root / n).is_file()}
    if not root.is_dir() or not files:
        raise ValueError(f"no {', '.join(_PTH_FILES.values())} in {str(root)!r}.")
    if not allow_pickle:
        raise ValueError(
            f"{', '.join(str(p) for p in files.values())}: RepMode .pth files are Python pickles, and loading a "
            "pickle can run arbitrary code. Pass allow_pickle=True (CLI: --allow-pickle) only for files you trust."
        )
    blobs = {s: _load_pth(p) for s, p in files.items()}
    names: list[str] = []
    for blob in blobs.values():
        for name in blob.get("adopted_datasets_loaded") or []:
            if str(name) not in names:
                names.append(str(name))
    entries: dict[str, list[dict[str, Any]]] = {}
    for split, blob in blobs.items():
        entries[split] = []
        for i, sample in enumerate(blob["data"]):
            where = f"{files[split]} entry {i}"
            if not isinstance(sample, Mapping) or not isinstance(sample.get("info"), Mapping):
                raise ValueError(f"{where}: expected a dict with 'info' and 'imgs'.")
            imgs = sample.get("imgs")
            if not isinstance(imgs, (list, tuple)) or not 1 <= len(imgs) <= 2:
                raise ValueError(f"{where}: 'imgs' must be [signal] or [signal, target].")
            info = sample["info"]
            structure = str(info.get("dataset", "")).strip()
            if not structure:
                raise ValueError(f"{where}: 'info' has no 'dataset' (structure) name.")
            if structure not in names:
                names.append(structure)
            path_czi = str(info.get("path_czi", f"{split}_{i}"))
            entries[split].append({"structure": structure, "stem": _stem(path_czi), "imgs": imgs, "where": where,
                                   "source": path_czi})  # fmt: skip

    spacing = [float(s) for s in spacing_zyx]

    def load(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
        signal = _as_zyx(entry["imgs"][0], entry["where"] + " signal")
        target = _as_zyx(entry["imgs"][1], entry["where"] + " target") if len(entry["imgs"]) > 1 else None
        if target is not None and target.shape != signal.shape:
            raise ValueError(f"{entry['where']}: signal {signal.shape} and target {target.shape} differ in shape.")
        return signal, target, spacing

    return _write_bundle(
        Path(out_dir),
        entries,
        sorted(names),
        "imported from RepMode's formatted .pth files (already z-scored and resampled)",
        {"split": {"from": sorted(str(p.name) for p in files.values())}},
        [root],
        overwrite,
        load,
    )
