"""
Prepare AllenCell label-free data for the SparseSSP bundle (z-scored OME-TIFF volumes at 0.29 um/px + datalist).

From AllenCell-style CSVs (one per structure, columns ``path_czi``, ``channel_signal``, ``channel_target``), or a
folder of them laid out like RepMode's ``data/csvs``::

    python scripts/prepare_allencell.py data/csvs --data-root data --out prepared/allencell

From RepMode's formatted ``train.pth`` / ``val.pth`` / ``test.pth`` (pickles: needs ``--allow-pickle``)::

    python scripts/prepare_allencell.py --from-repmode-pth data/all_data --allow-pickle --out prepared/allencell

Then train on it (the command is printed at the end). CZI files need ``pip install 'sparsessp_monai[czi]'``.
See docs/allencell.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sparsessp_monai.data.allencell import (
    DEFAULT_SOURCE_SPACING_ZYX,
    REPMODE_DNA_COUNTS,
    TARGET_XY_UM,
    import_repmode_pth,
    prepare_allencell,
)


def _dna_counts(text: str) -> dict[str, int | None]:
    """``all`` or ``train,val,test`` where each entry is a non-negative integer or ``all``."""
    parts = [v.strip().lower() for v in text.split(",")]
    if parts == ["all"]:
        parts = ["all"] * 3
    try:
        values = [None if v == "all" else int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v is not None and v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected 'all' or 'train,val,test' (integers or 'all'), got {text!r}")
    return dict(zip(("training", "validation", "test"), values))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="*", help="per-structure CSV file(s) (<structure>.csv) or one folder of them")
    p.add_argument("--out", required=True, help="output folder (outside the inputs; must be empty or new)")
    p.add_argument("--data-root", help="folder that relative path_czi values are resolved against (default: CSV's)")
    p.add_argument("--dna-name", default="dna", help="structure drawn from the other structures' images (dna)")
    p.add_argument(
        "--dna-counts",
        type=_dna_counts,
        default=dict(REPMODE_DNA_COUNTS),
        help="DNA images per split, 'train,val,test' or 'all' (default RepMode's 54,6,20)",
    )
    p.add_argument("--seed", type=int, default=42, help="split seed (RepMode: 42)")
    p.add_argument(
        "--source-spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help=f"raw voxel size in um; default each file's own, else {DEFAULT_SOURCE_SPACING_ZYX}",
    )
    p.add_argument("--target-xy", type=float, default=TARGET_XY_UM, help="output pixel size in um (Z unchanged)")
    p.add_argument("--from-repmode-pth", metavar="DIR", help="import RepMode's train.pth/val.pth/test.pth instead")
    p.add_argument("--allow-pickle", action="store_true", help="allow unpickling the .pth files (trusted files only)")
    p.add_argument(
        "--pth-spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=(DEFAULT_SOURCE_SPACING_ZYX[0], TARGET_XY_UM, TARGET_XY_UM),
        help="voxel size written for imported .pth volumes (default 0.29 0.29 0.29)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder once all is written")
    args = p.parse_args(argv)
    if bool(args.csv) == bool(args.from_repmode_pth):
        p.error("give either CSV file(s)/folder or --from-repmode-pth DIR")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the preparation; returns the exit status (1 on bad input, with the reason on stderr)."""
    args = parse_args(argv)
    try:
        if args.from_repmode_pth:
            datalist = import_repmode_pth(
                args.from_repmode_pth,
                args.out,
                allow_pickle=args.allow_pickle,
                spacing_zyx=args.pth_spacing,
                overwrite=args.overwrite,
            )
        else:
            csvs = args.csv[0] if len(args.csv) == 1 and Path(args.csv[0]).is_dir() else args.csv
            datalist = prepare_allencell(
                csvs,
                args.out,
                data_root=args.data_root,
                dna_name=args.dna_name,
                dna_counts=args.dna_counts,
                seed=args.seed,
                source_spacing_zyx=args.source_spacing,
                target_xy=args.target_xy,
                overwrite=args.overwrite,
            )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    content = json.loads(Path(datalist).read_text())
    counts = ", ".join(f"{k} {len(content[k])}" for k in ("training", "validation", "test"))
    structures = json.dumps(content["structures"]).replace(" ", "")
    print(f"wrote {datalist} ({counts}; structures {content['structures']})")
    for key in ("training", "validation"):
        if not content[key]:
            # RepMode's rounding leaves validation empty for structures with fewer than 7 images
            print(
                f"warning: the {key} split is empty; the bundle's training needs images in both training and "
                "validation",
                file=sys.stderr,
            )
    print(
        "train with:\n  python -m monai.bundle run training --config_file bundle/configs/train.json "
        f"--datalist_file {datalist} --dataset_dir {Path(datalist).parent} --structures '{structures}'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
