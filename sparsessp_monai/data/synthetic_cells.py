"""
Deterministic synthetic paired volumes for demos and tests: a transmitted-light (brightfield) stack and the
fluorescence of ONE labelled structure, mimicking the AllenCell "label-free" data where every image carries the
label of a single structure only (partial labels).

Arrays are (Z, Y, X) float32 with 0.29 um isotropic voxels. The model lives in three modules:

* :mod:`~sparsessp_monai.data.cell_scene` draws the scene (cells, nuclei, organelles as density maps) once per
  seed, shared by every structure, so ``make_sample(s, seed)`` for two structures returns the same
  transmitted-light image (primitives in :mod:`~sparsessp_monai.data.cell_geometry`);
* :mod:`~sparsessp_monai.data.cell_render` forms the fluorescence and transmitted-light images from it;
* :mod:`~sparsessp_monai.data.filters` holds the deterministic numpy filters both use.

This module is the public entry point: :func:`make_sample`, :func:`make_sample_all_structures`, the on-disk demo
dataset :func:`generate_demo_dataset` and its command line (``python -m sparsessp_monai.data.synthetic_cells``).

Determinism
-----------
All randomness comes from ``numpy.random.Generator`` seeded through ``SeedSequence``; volumes are computed with
element-wise arithmetic, ``sqrt`` and sequential ``bincount`` sums only (no SIMD-dispatched transcendental ufuncs
or BLAS), so the same arguments give bit-identical arrays on every run with the same numpy version.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cell_render import STRUCTURES, render_fluorescence, render_transmitted_light
from .cell_scene import draw_scene

__all__ = [
    "GENERATOR_VERSION",
    "SPACING_ZYX_UM",
    "STRUCTURES",
    "generate_demo_dataset",
    "main",
    "make_sample",
    "make_sample_all_structures",
    "sample_seed",
]

SPACING_ZYX_UM: tuple[float, float, float] = (0.29, 0.29, 0.29)
"""Voxel size (z, y, x) in micrometres."""

GENERATOR_VERSION = 1
"""Bumped whenever the image model changes, so cached demo datasets are regenerated."""

_MIN_DIM = 8
# SeedSequence keys of the dataset's per-sample seeds and splits; cell_scene uses 0, cell_render 1 and 2
_KEY_DATASET, _KEY_SPLIT = 3, 4
_DATALIST = "datalist.json"
_IMAGES = "images"


def _check_structure(structure: str) -> str:
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; valid structures are: {', '.join(STRUCTURES)}.")
    return structure


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"shape must be a sequence of three integers (Z, Y, X), got {shape!r}.") from exc
    if len(dims) != 3 or any(d < _MIN_DIM for d in dims):
        raise ValueError(f"shape must be three integers (Z, Y, X), each >= {_MIN_DIM}; got {tuple(shape)!r}.")
    return dims  # type: ignore[return-value]


def _check_seed(seed: int) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.") from exc
    if value < 0 or value != seed:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return value


def make_sample(
    structure: str, seed: int, shape: tuple[int, int, int] = (32, 128, 128)
) -> tuple[np.ndarray, np.ndarray]:
    """
    Generate one synthetic (transmitted light, fluorescence) pair.

    The scene (cells and organelles) depends only on ``seed`` and ``shape``, so every structure drawn with the
    same seed shares the same transmitted-light image; only the fluorescence channel differs.

    Args:
        structure: name of the labelled structure, one of :data:`STRUCTURES`.
        seed: non-negative integer seed; the same arguments always give bit-identical arrays.
        shape: volume shape (Z, Y, X), each dimension at least 8. Voxels are 0.29 um isotropic.

    Returns:
        ``(transmitted_light, fluorescence)``, both float32 arrays of ``shape``, each z-score normalised
        (mean 0, standard deviation 1).

    Raises:
        ValueError: for an unknown structure, a negative or non-integer seed, or an invalid shape.
    """
    _check_structure(structure)
    seed = _check_seed(seed)
    dims = _check_shape(shape)
    scene = draw_scene(seed, dims)
    return render_transmitted_light(scene, seed), render_fluorescence(scene, structure, seed)


def make_sample_all_structures(
    seed: int, shape: tuple[int, int, int] = (32, 128, 128), structures: Sequence[str] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """
    Generate the transmitted-light image of one scene and the fluorescence of several structures in it.

    Useful as a fully labelled reference (e.g. to evaluate a multi-task model on every structure at once). The
    arrays are bit-identical to those of :func:`make_sample` with the same ``seed`` and ``shape``.

    Args:
        seed: non-negative integer seed.
        shape: volume shape (Z, Y, X), each dimension at least 8.
        structures: names to render, default all of :data:`STRUCTURES`.

    Returns:
        ``(transmitted_light, {structure: fluorescence})``, float32, z-score normalised.

    Raises:
        ValueError: for an unknown structure, a negative or non-integer seed, or an invalid shape.
    """
    names = list(STRUCTURES if structures is None else structures)
    for name in names:
        _check_structure(name)
    seed = _check_seed(seed)
    dims = _check_shape(shape)
    scene = draw_scene(seed, dims)
    return render_transmitted_light(scene, seed), {s: render_fluorescence(scene, s, seed) for s in names}


# --------------------------------------------------------------------------------------------------------------
# demo dataset on disk
# --------------------------------------------------------------------------------------------------------------


def _generator_args(
    num_per_structure: int, shape: tuple[int, int, int], seed: int, structures: Sequence[str], val_fraction: float
) -> dict:
    # everything that changes the files on disk, in JSON-native types so it compares equal after a round trip
    return {
        "num_per_structure": num_per_structure,
        "shape": list(shape),
        "seed": seed,
        "structures": list(structures),
        "val_fraction": val_fraction,
        "version": GENERATOR_VERSION,
    }


def sample_seed(seed: int, task: int, index: int) -> int:
    """The :func:`make_sample` seed of sample ``index`` of structure ``task`` in a demo dataset of base ``seed``."""
    return int(np.random.SeedSequence([seed, _KEY_DATASET, task, index]).generate_state(1)[0])


def _validation_indices(num: int, val_fraction: float, seed: int, task: int) -> set[int]:
    if num < 2 or val_fraction <= 0:
        # a structure with a single sample keeps it for training
        return set()
    n_val = min(num - 1, max(1, round(val_fraction * num)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KEY_SPLIT, task]))
    return {int(i) for i in rng.permutation(num)[:n_val]}


def generate_demo_dataset(
    out_dir: str | os.PathLike,
    num_per_structure: int = 8,
    shape: tuple[int, int, int] = (40, 128, 128),
    seed: int = 0,
    structures: Sequence[str] | None = None,
    val_fraction: float = 0.25,
) -> Path:
    """
    Write a synthetic partially labelled dataset of OME-TIFF pairs and a MONAI-style datalist.

    For every structure ``s`` and index ``k`` two volumes are written,
    ``<out_dir>/images/<s>_<k:03d>_signal.ome.tif`` (transmitted light, channel "brightfield") and
    ``<out_dir>/images/<s>_<k:03d>_target.ome.tif`` (fluorescence, channel ``s``), together with
    ``<out_dir>/datalist.json``::

        {"training": [{"image": "images/dna_000_signal.ome.tif", "label": "images/dna_000_target.ome.tif",
                       "structure": "dna", "task": 0}, ...],
         "validation": [...], "structures": [...], "spacing_zyx_um": [0.29, 0.29, 0.29], "generator": {...}}

    Paths are relative to ``out_dir``; ``task`` is the index of the structure in :data:`STRUCTURES` (also when
    only a subset is generated). The split is stratified per structure and deterministic. Every sample uses its
    own scene, seeded from ``(seed, task, k)``.

    The call is idempotent and cheap when nothing changed: if ``out_dir`` was published with the same generator
    arguments (:func:`sparsessp_monai.io.is_complete`: its done-marker matches and all its files exist) nothing is
    written. Otherwise the dataset is generated in a staging folder next to ``out_dir`` and published with
    :func:`sparsessp_monai.io.staged_folder`, so an interrupted run leaves neither a partial dataset nor a staging
    folder. Other files in ``out_dir`` are left alone.

    Args:
        out_dir: destination directory, created if needed.
        num_per_structure: number of samples per structure (>= 1).
        shape: volume shape (Z, Y, X), each dimension at least 8.
        seed: non-negative base seed.
        structures: structures to include, default all of :data:`STRUCTURES`.
        val_fraction: fraction of each structure's samples put in "validation", in [0, 1). At least one sample
            per structure goes to validation when the fraction is positive and the structure has two or more
            samples.

    Returns:
        Path of ``datalist.json``.

    Raises:
        ValueError: for invalid arguments (unknown or duplicate structures, bad shape, seed or fractions).
    """
    names, num, val = _check_dataset_args(structures, num_per_structure, val_fraction)
    dims = _check_shape(shape)
    seed = _check_seed(seed)
    out = Path(out_dir).expanduser().absolute()
    args = _generator_args(num, dims, seed, names, val)
    # imported here: sparsessp_monai.io pulls in MONAI (seconds), which importing make_sample should not pay for
    from sparsessp_monai.io import is_complete, staged_folder

    if not is_complete(out, args):
        with staged_folder(out, args) as stage:
            _write_dataset(stage, args)
    return out / _DATALIST


def _check_dataset_args(
    structures: Sequence[str] | None, num_per_structure: int, val_fraction: float
) -> tuple[list[str], int, float]:
    names = list(STRUCTURES if structures is None else structures)
    if isinstance(structures, str):
        raise ValueError(f"structures must be a sequence of names, not the string {structures!r}.")
    if not names:
        raise ValueError("structures must not be empty.")
    for name in names:
        _check_structure(name)
    if len(set(names)) != len(names):
        raise ValueError(f"structures contains duplicates: {names}.")
    if isinstance(num_per_structure, bool) or int(num_per_structure) != num_per_structure or num_per_structure < 1:
        raise ValueError(f"num_per_structure must be a positive integer, got {num_per_structure!r}.")
    val = float(val_fraction)
    if not 0.0 <= val < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    return names, int(num_per_structure), val


def _write_dataset(stage: Path, args: dict) -> None:
    """Write every sample pair and the datalist of the validated generator ``args`` into the folder ``stage``."""
    from sparsessp_monai.io import write_ome_tiff

    num, dims, seed, val = args["num_per_structure"], tuple(args["shape"]), args["seed"], args["val_fraction"]
    (stage / _IMAGES).mkdir()
    training: list[dict] = []
    validation: list[dict] = []
    for name in args["structures"]:
        task = STRUCTURES.index(name)
        val_idx = _validation_indices(num, val, seed, task)
        for k in range(num):
            signal, target = make_sample(name, sample_seed(seed, task, k), dims)
            image_rel = f"{_IMAGES}/{name}_{k:03d}_signal.ome.tif"
            label_rel = f"{_IMAGES}/{name}_{k:03d}_target.ome.tif"
            write_ome_tiff(stage / image_rel, signal, spacing_zyx=SPACING_ZYX_UM, channel_names=["brightfield"])
            write_ome_tiff(stage / label_rel, target, spacing_zyx=SPACING_ZYX_UM, channel_names=[name])
            item = {"image": image_rel, "label": label_rel, "structure": name, "task": task}
            (validation if k in val_idx else training).append(item)
    content = {
        "training": training,
        "validation": validation,
        "structures": list(args["structures"]),
        "spacing_zyx_um": list(SPACING_ZYX_UM),
        "generator": args,
    }
    (stage / _DATALIST).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """
    Command line entry point: ``python -m sparsessp_monai.data.synthetic_cells --out DIR [options]``.

    Args:
        argv: arguments without the program name, default ``sys.argv[1:]``.

    Returns:
        Process exit status (0 on success; invalid arguments exit with status 2 through argparse).
    """
    parser = argparse.ArgumentParser(
        prog="python -m sparsessp_monai.data.synthetic_cells",
        description="Generate the synthetic SparseSSP demo dataset (transmitted light -> fluorescence OME-TIFFs).",
    )
    parser.add_argument("--out", required=True, help="output directory (datalist.json and images/)")
    parser.add_argument("--num-per-structure", type=int, default=8, help="samples per structure (default 8)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[40, 128, 128], metavar=("D", "H", "W"), help="volume shape Z Y X"
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--structures", nargs="+", choices=STRUCTURES, default=None, help="default: all")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="validation fraction per structure")
    ns = parser.parse_args(argv)
    try:
        path = generate_demo_dataset(
            ns.out,
            num_per_structure=ns.num_per_structure,
            shape=tuple(ns.shape),
            seed=ns.seed,
            structures=ns.structures,
            val_fraction=ns.val_fraction,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
