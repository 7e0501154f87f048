"""
Held-out check of thin-slice reconstruction on a real volume: train the CT/MR bundle config at ratio r on one axial
slab of the MNI ICBM152 T1 template and compare the model with trilinear and cubic-spline interpolation of the same
sparse slices on a disjoint slab (a gap of ``--gap`` mm between them), with the bundle's own evaluation.

The slabs are written as NIfTI files with their exact affines into ``--work_dir``; training and evaluation are the
user commands (``ct_train.json`` merged on ``train.json``, then ``evaluate.json`` + ``ct_evaluate.json`` on top) run
in-process with overrides.
Model selection never looks at the held-out slab: there is no validation during training and the final weights
(``checkpoint_final.pt``) are evaluated.

Example (about 10 minutes on an idle 2-core CPU)::

    python scripts/ct_heldout.py --work_dir runs/ct_heldout

Prints the per-method means and the PSNR margin of the model over cubic interpolation on the non-acquired slices
(and on all slices); exits non-zero when the input volume is missing or unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VOLUME = REPO.parent / "shared" / "data" / "mri" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
CONFIGS = REPO / "bundle" / "configs"


def write_slabs(volume: Path, out: Path, train_slices: int, gap: int, ratio: int) -> dict[str, list[dict[str, str]]]:
    """Write the inferior ``train_slices`` axial slices and, after ``gap`` slices, the rest (trimmed to a multiple of
    ``ratio``) as two NIfTI volumes with their world affines; returns the datalist."""
    import nibabel as nib

    img = nib.load(str(volume))
    if len(img.shape) != 3:
        raise ValueError(f"{volume}: expected a 3D volume, got shape {img.shape}.")
    codes = nib.aff2axcodes(img.affine)
    axis = next(i for i, c in enumerate(codes) if c in ("S", "I"))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError(f"{volume}: contains NaN/Inf values.")
    depth = data.shape[axis]
    # storage index of the k-th slice counted from the inferior end
    inferior = np.arange(depth) if codes[axis] == "S" else np.arange(depth)[::-1]
    test_start = train_slices + gap
    test_depth = (depth - test_start) // ratio * ratio
    if train_slices < 32 or test_depth < 32:
        raise ValueError(f"{volume}: {depth} axial slices are too few for the split ({train_slices}, gap {gap}).")
    out.mkdir(parents=True, exist_ok=True)
    items = {}
    for name, start, count in (("train", 0, train_slices), ("heldout", test_start, test_depth)):
        idx = np.sort(inferior[start : start + count])
        shift = np.eye(4)
        shift[axis, 3] = idx[0]
        slab = nib.Nifti1Image(np.take(data, idx, axis=axis), img.affine @ shift)
        nib.save(slab, str(out / f"{name}.nii.gz"))
        items[name] = [{"image": f"{name}.nii.gz"}]
    datalist = {"training": items["train"], "validation": items["heldout"]}
    (out / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return datalist


def main(argv: list[str] | None = None) -> int:
    """Run the held-out experiment; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME, help="thin-slice NIfTI volume")
    parser.add_argument("--work_dir", type=Path, default=REPO / "runs" / "ct_heldout")
    parser.add_argument("--modality", default="MR", choices=("CT", "MR"))
    parser.add_argument("--ratio", type=int, default=4)
    parser.add_argument("--train_slices", type=int, default=112, help="inferior slices used for training")
    parser.add_argument("--gap", type=int, default=8, help="slices left out between the training and held-out slabs")
    parser.add_argument("--epochs", type=int, default=1500, help="epochs (one step of --samples patches each)")
    parser.add_argument("--samples", type=int, default=8, help="random patches per epoch, one batch")
    parser.add_argument("--patch", type=int, nargs=3, default=(32, 64, 64), help="training patch (S, P, L)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--prefix_mode", default="cubic", choices=("cubic", "trilinear"))
    parser.add_argument(
        "--depth_swap_prob",
        type=float,
        default=0.5,
        help="probability of training on a patch whose depth axis is the sagittal or coronal one (isotropic data)",
    )
    args = parser.parse_args(argv)

    if not args.volume.is_file():
        print(f"error: {args.volume} not found (the MNI template lives in ../shared/data/mri/).", file=sys.stderr)
        return 2
    from monai.bundle import run

    data_dir, root = args.work_dir / "data", args.work_dir / "bundle"
    try:
        write_slabs(args.volume, data_dir, args.train_slices, args.gap, args.ratio)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    common = {
        "bundle_root": str(root),
        "dataset_dir": str(data_dir),
        "modality": args.modality,
        "ratio": args.ratio,
        "prefix_mode": args.prefix_mode,
        "patch_size": list(args.patch),
        "val_roi_size": [args.patch[0], 96, 96],
    }
    start = time.perf_counter()
    run(
        "training",
        config_file=[str(CONFIGS / c) for c in ("train.json", "ct_train.json")],
        **common,
        **{
            "train#trainer#max_epochs": args.epochs,
            "val_interval": args.epochs + 1,  # never validate on the held-out slab during training
            "samples_per_volume": args.samples,
            "batch_size": 1,  # one volume per step: its --samples patches are the batch
            "learning_rate": args.lr,
            "ckpt_interval": args.epochs,
            "depth_swap_prob": args.depth_swap_prob,
        },
    )
    train_s = time.perf_counter() - start
    run(
        "evaluating",
        config_file=[str(CONFIGS / c) for c in ("train.json", "ct_train.json", "evaluate.json", "ct_evaluate.json")],
        **common,
        ckpt_path=str(root / "models" / "ct" / "checkpoint_final.pt"),
    )
    summary = json.loads((root / "eval" / "ct" / "thin_slice_summary.json").read_text())
    unit = "HU" if args.modality == "CT" else "intensity units"
    print(f"\nheld-out slab, ratio {args.ratio}, {args.epochs} epochs x {args.samples} patches, train {train_s:.0f} s")
    print(f"{'method':<10} {'subset':<8} {'PSNR dB':>8} {'SSIM':>7} {'MAE ' + unit:>22}")
    for subset in ("missing", "all"):
        for method in ("model", "trilinear", "cubic"):
            print(
                f"{method:<10} {subset:<8} {summary[f'{method}_psnr_{subset}']:8.3f} "
                f"{summary[f'{method}_ssim_{subset}']:7.4f} {summary[f'{method}_mae_{subset}']:22.3f}"
            )
    for subset in ("missing", "all"):
        margin = summary[f"psnr_{subset}_model_minus_cubic"]
        print(f"PSNR margin model - cubic ({subset} slices): {margin:+.3f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
