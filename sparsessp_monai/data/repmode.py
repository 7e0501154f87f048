"""
Import RepMode's formatted ``train.pth`` / ``val.pth`` / ``test.pth`` (already normalised and resampled) into
the prepared AllenCell layout. They are pickles, so loading them needs an explicit opt-in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .allencell_csv import DEFAULT_SOURCE_SPACING_ZYX, TARGET_XY_UM
from .allencell_prepare import file_stem, write_prepared_dataset

__all__ = ["import_repmode_pth"]

# RepMode's file names per split
_PTH_FILES = {"training": "train.pth", "validation": "val.pth", "test": "test.pth"}


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
            entries[split].append({"structure": structure, "stem": file_stem(path_czi), "imgs": imgs, "where": where,
                                   "source": path_czi})  # fmt: skip

    spacing = [float(s) for s in spacing_zyx]

    def load(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
        signal = _as_zyx(entry["imgs"][0], entry["where"] + " signal")
        target = _as_zyx(entry["imgs"][1], entry["where"] + " target") if len(entry["imgs"]) > 1 else None
        if target is not None and target.shape != signal.shape:
            raise ValueError(f"{entry['where']}: signal {signal.shape} and target {target.shape} differ in shape.")
        return signal, target, spacing

    return write_prepared_dataset(
        Path(out_dir),
        entries,
        sorted(names),
        "imported from RepMode's formatted .pth files (already z-scored and resampled)",
        {"split": {"from": sorted(str(p.name) for p in files.values())}},
        [root],
        overwrite,
        load,
    )
