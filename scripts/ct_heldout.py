"""
Held-out check of thin-slice reconstruction on a real volume: train the CT/MR bundle config at ratio r on one axial
slab of a real thin-slice volume and compare the model with trilinear and cubic-spline interpolation of the same
sparse slices on a disjoint slab (a gap of ``--gap`` slices between them), with the bundle's own evaluation.

The slabs are written as NIfTI files with their exact affines into ``--work_dir``; training and evaluation are the
user commands (``ct_train.json`` merged on ``train.json``, then ``evaluate.json`` + ``ct_evaluate.json`` on top) run
in-process. Every training option left out keeps the config's value, so without them the run is the default CT
command on the training slab. Model selection never looks at the held-out slab: there is no validation during
training and the final weights (``checkpoint_final.pt``) are evaluated.

Examples (docs/ct.md has the figures and how long they take)::

    # the real chest CT (2 mm slices): r = 4 (8 mm -> 2 mm), training slab = the inferior 90 slices
    python scripts/ct_heldout.py --volume ../shared/data/ct/chest_ct_2mm_141sl_HU.nii.gz --modality CT \\
        --ratio 4 --train_slices 90 --work_dir runs/ct_chest_r4
    # the MNI T1 template (1 mm isotropic, so depth swaps are allowed)
    python scripts/ct_heldout.py --modality MR --depth_swap_prob 0.5 --work_dir runs/ct_heldout
    # the same model also scored on other real CT volumes it never saw (NIfTI or NRRD; docs/ct.md says where the
    # two lung CTs of pyradiomics' test data come from)
    python scripts/ct_heldout.py --volume ../shared/data/ct/chest_ct_2mm_141sl_HU.nii.gz --modality CT \\
        --ratio 4 --train_slices 90 --work_dir runs/ct_chest_r4 --external lung1_image.nrrd lung2_image.nrrd
    # every volume at hand: one lung CT joins the training set, the other is scored
    python scripts/ct_heldout.py --volume ../shared/data/ct/chest_ct_2mm_141sl_HU.nii.gz --modality CT \\
        --ratio 4 --train_slices 90 --work_dir runs/ct_chest_lung1_r4 --train_extra lung1_image.nrrd \\
        --external lung2_image.nrrd

Prints the per-method means, the model's margins over both interpolations on the non-acquired slices and whether
it beats both on PSNR, SSIM and MAE, and with ``--external`` the same per volume for each external volume (scored
whole, its axial axis trimmed to a multiple of r); writes ``WORK/result.json``. Exits with 2 and one line when an
input volume is missing, unreadable or too small for the split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VOLUME = REPO.parent / "shared" / "data" / "mri" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
CONFIGS = REPO / "bundle" / "configs"
# the bundle's `loss` id as a config expression
LOSSES = {
    "mse": "$torch.nn.MSELoss()",
    "l1": "$torch.nn.L1Loss()",
    "mse+ssim": "$sparsessp_monai.ct.SliceSSIMMSELoss(ssim_weight=@ssim_weight, depth_axis=@depth_axis)",
}


def read_volume(path: Path):
    """A 3D volume as a ``nibabel`` NIfTI image with its world (RAS+) affine: NIfTI through nibabel, NRRD (3D
    Slicer's format, e.g. the CT cases of pyradiomics' test data) through MONAI's ``NrrdReader`` (``pynrrd``),
    whose affine is converted from the file's LPS space. Raises ValueError naming the file when it is unreadable or
    not 3D."""
    import nibabel as nib

    if not path.name.lower().endswith(".nrrd"):
        try:
            img = nib.load(str(path))
        except Exception as e:  # nibabel's ImageFileError and friends: one line naming the file
            raise ValueError(f"{path}: not a readable NIfTI file ({e})") from e
        if len(img.shape) != 3:
            raise ValueError(f"{path}: expected a 3D volume, got shape {img.shape}.")
        return img
    from monai.data import NrrdReader
    from monai.utils import optional_import

    if not optional_import("nrrd")[1]:
        raise ValueError(f"{path}: reading NRRD needs pynrrd (pip install pynrrd).")
    reader = NrrdReader(dtype=None)
    try:
        data, meta = reader.get_data(reader.read(str(path)))
    except Exception as e:  # pynrrd's NRRDError is no ValueError
        raise ValueError(f"{path}: not a readable NRRD file ({e})") from e
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}.")
    return nib.Nifti1Image(data, np.asarray(meta["affine"], dtype=np.float64))


def _axial_axis(img) -> tuple[int, bool]:
    """The storage axis of ``img`` that runs inferior-superior, and whether its index grows superiorly."""
    import nibabel as nib

    codes = nib.aff2axcodes(img.affine)
    axis = next(i for i, c in enumerate(codes) if c in ("S", "I"))
    return axis, codes[axis] == "S"


def _save_slab(img, slab: np.ndarray, first: int, axis: int, path: Path) -> None:
    """Save ``slab``, the consecutive storage slices of ``img`` along ``axis`` from index ``first`` on, as NIfTI
    with the world affine of ``img`` shifted to that slice."""
    import nibabel as nib

    shift = np.eye(4)
    shift[axis, 3] = first
    nib.save(nib.Nifti1Image(slab, img.affine @ shift), str(path))


def write_slabs(
    volume: Path,
    out: Path,
    train_slices: int,
    gap: int,
    ratio: int,
    train_side: str = "inferior",
    extra: Sequence[Path] = (),
) -> dict[str, list[dict[str, str]]]:
    """Write the ``train_slices`` axial slices at the ``train_side`` end ("inferior" or "superior") and, after
    ``gap`` slices, the rest (trimmed to a multiple of ``ratio``) as two NIfTI volumes with their world affines,
    and each of the ``extra`` training volumes whole as ``train_<name>.nii.gz``; returns the datalist."""
    img = read_volume(volume)
    axis, superior_up = _axial_axis(img)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError(f"{volume}: contains NaN/Inf values.")
    depth = data.shape[axis]
    # storage index of the k-th slice counted from the inferior end
    inferior = np.arange(depth) if superior_up else np.arange(depth)[::-1]
    if train_side not in ("inferior", "superior"):
        raise ValueError(f"train_side must be 'inferior' or 'superior', got {train_side!r}.")
    order = inferior if train_side == "inferior" else inferior[::-1]
    test_start = train_slices + gap
    test_depth = (depth - test_start) // ratio * ratio
    if train_slices < 32 or test_depth < 32:
        raise ValueError(f"{volume}: {depth} axial slices are too few for the split ({train_slices}, gap {gap}).")
    out.mkdir(parents=True, exist_ok=True)
    items = {}
    for name, start, count in (("train", 0, train_slices), ("heldout", test_start, test_depth)):
        idx = np.sort(order[start : start + count])
        _save_slab(img, np.take(data, idx, axis=axis), int(idx[0]), axis, out / f"{name}.nii.gz")
        items[name] = [{"image": f"{name}.nii.gz"}]
    for path, name in zip(extra, _names(extra, "training")):
        _write_whole(path, out / f"train_{name}.nii.gz", 1)
        items["train"].append({"image": f"train_{name}.nii.gz"})
    datalist = {"training": items["train"], "validation": items["heldout"]}
    (out / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return datalist


def _names(volumes: list[Path], role: str) -> list[str]:
    """File names without the ``.nii.gz`` / ``.nii`` / ``.nrrd`` suffix; raises ValueError when two of the
    ``role`` ("training" / "external") volumes share one."""
    names = [p.name[: -len(".nii.gz")] if p.name.lower().endswith(".nii.gz") else p.stem for p in volumes]
    if len(set(names)) != len(names):
        raise ValueError(f"{role} volumes must have distinct names, got {[str(p) for p in volumes]}.")
    return names


def _write_whole(path: Path, out: Path, ratio: int) -> None:
    """Write the volume at ``path`` whole as NIfTI ``out`` with its world affine, its axial axis trimmed from the
    superior end to a multiple of ``ratio`` (1: not trimmed)."""
    img = read_volume(path)
    axis, superior_up = _axial_axis(img)
    depth = img.shape[axis] // ratio * ratio
    if depth < 2 * ratio:
        raise ValueError(f"{path}: {img.shape[axis]} axial slices are too few for ratio {ratio}.")
    keep = np.arange(depth) if superior_up else np.arange(img.shape[axis] - depth, img.shape[axis])
    data = np.take(np.asarray(img.dataobj), keep, axis=axis)
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: contains NaN/Inf values.")
    _save_slab(img, data, int(keep[0]), axis, out)


def write_external(volumes: list[Path], out: Path, ratio: int, training: str) -> list[str]:
    """Write each of ``volumes`` whole, its axial axis trimmed from the superior end to a multiple of ``ratio``, as
    ``out/<name>.nii.gz`` with its world affine, and ``out/datalist.json`` with them as the validation split (and
    ``training``, a path relative to ``out``, as the training split the configs also resolve); returns the names."""
    names = _names(volumes, "external")
    out.mkdir(parents=True, exist_ok=True)
    for path, name in zip(volumes, names):
        _write_whole(path, out / f"{name}.nii.gz", ratio)
    datalist = {"training": [{"image": training}], "validation": [{"image": f"{n}.nii.gz"} for n in names]}
    (out / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return names


# training options of this script -> the config ids they override; None (the default) keeps the config's value.
# --prefix_mode and --patch are set for training and evaluation alike (see `common` in main)
TRAIN_OPTIONS = {
    "epochs": "train#trainer#max_epochs",
    "epoch_length": "min_epoch_length",
    "samples": "samples_per_volume",
    "lr": "learning_rate",
    "depth_swap_prob": "depth_swap_prob",
    "depth_zoom_prob": "depth_zoom_prob",
    "ssim_weight": "ssim_weight",
    "seed": "seed",
}
BASELINES = ("trilinear", "cubic")
# sign that turns "model minus baseline" into "> 0: the model is better" (PSNR and SSIM higher, MAE lower)
BETTER = {"psnr": 1.0, "ssim": 1.0, "mae": -1.0}


def beats_both(won: dict[str, dict[str, float]]) -> bool:
    """Whether every signed margin of :func:`margins` / :func:`external_scores` is positive."""
    return all(v > 0 for m in won.values() for v in m.values())


def margins(summary: dict[str, float], subset: str = "missing") -> dict[str, dict[str, float]]:
    """The evaluation's model-minus-baseline margins (``<metric>_<subset>_model_minus_<baseline>`` of
    ``thin_slice_summary.json``), signed so that a positive margin means the model is better (PSNR and SSIM higher,
    MAE lower)."""
    return {b: {m: sign * summary[f"{m}_{subset}_model_minus_{b}"] for m, sign in BETTER.items()} for b in BASELINES}


def external_scores(per_volume_csv: Path, names: list[str]) -> dict[str, dict]:
    """Per external volume (by name): every method's PSNR / SSIM / MAE on the missing slices, the model's signed
    margins over both interpolations (> 0: the model is better) and whether it beats both on all three."""
    import csv

    with open(per_volume_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    scores = {}
    for name in names:
        row = next((r for r in rows if Path(r["filename"]).name == f"{name}.nii.gz"), None)
        if row is None:
            raise RuntimeError(f"{per_volume_csv}: no row for {name}.nii.gz")
        value = {m: {k: float(row[f"{m}_{k}_missing"]) for k in BETTER} for m in ("model", *BASELINES)}
        won = {b: {k: s * (value["model"][k] - value[b][k]) for k, s in BETTER.items()} for b in BASELINES}
        scores[name] = {**value, "margins": won, "beats_both": beats_both(won)}
    return scores


def main(argv: list[str] | None = None) -> int:
    """Run the held-out experiment; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME, help="thin-slice NIfTI volume")
    parser.add_argument("--work_dir", type=Path, default=REPO / "runs" / "ct_heldout")
    parser.add_argument("--modality", default="MR", choices=("CT", "MR"))
    parser.add_argument("--ratio", type=int, default=4)
    parser.add_argument("--train_slices", type=int, default=112, help="slices of the training slab")
    parser.add_argument("--gap", type=int, default=8, help="slices left out between the training and held-out slabs")
    parser.add_argument(
        "--train_side",
        default="inferior",
        choices=("inferior", "superior"),
        help="end of the volume the training slab is taken from; the held-out slab is at the other end",
    )
    parser.add_argument(
        "--external",
        type=Path,
        nargs="+",
        default=[],
        help="other real thin-slice volumes (NIfTI or NRRD) the trained model is also scored on, each whole",
    )
    parser.add_argument(
        "--train_extra",
        type=Path,
        nargs="+",
        default=[],
        help="other real thin-slice volumes (NIfTI or NRRD) added whole to the training set (never scored)",
    )
    group = parser.add_argument_group("training (default: the value in ct_train.json / train.json)")
    group.add_argument("--epochs", type=int, help="epochs (train#trainer#max_epochs)")
    group.add_argument("--epoch_length", type=int, help="least optimiser steps per epoch (min_epoch_length)")
    group.add_argument("--samples", type=int, help="random patches per volume and step (samples_per_volume)")
    group.add_argument("--patch", type=int, nargs=3, help="training patch (S, P, L) (patch_size)")
    group.add_argument("--lr", type=float, help="peak learning rate of the cosine schedule (learning_rate)")
    group.add_argument("--prefix_mode", choices=("cubic", "trilinear"), help="interpolation the model corrects")
    group.add_argument("--loss", choices=tuple(LOSSES), help="training loss (loss; the config's is mse+ssim)")
    group.add_argument("--ssim_weight", type=float, help="weight of the SSIM term of the mse+ssim loss")
    group.add_argument(
        "--depth_swap_prob",
        type=float,
        help="probability of training on a patch whose depth axis is the sagittal or coronal one (isotropic data)",
    )
    group.add_argument(
        "--depth_zoom_prob",
        type=float,
        help="probability of training on the volume resampled to thicker slices (depth_zoom_prob)",
    )
    group.add_argument("--seed", type=int, help="seed of initialisation and augmentation (seed)")
    parser.add_argument(
        "--tta_flip_axes",
        type=int,
        nargs="*",
        help="evaluation: axes whose mirror images the model's prediction is averaged over (the config's: 0 1 2; "
        "none: one pass)",
    )
    args = parser.parse_args(argv)

    overlap = {p.resolve() for p in args.external} & {p.resolve() for p in args.train_extra}
    if overlap:
        print(f"error: {sorted(map(str, overlap))[0]} is both a training and an external volume.", file=sys.stderr)
        return 2
    for volume in (args.volume, *args.external, *args.train_extra):
        if not volume.is_file():
            print(f"error: {volume} not found (the real volumes live in ../shared/data/).", file=sys.stderr)
            return 2
    from monai.bundle import run

    data_dir, root = args.work_dir / "data", args.work_dir / "bundle"
    external_dir = args.work_dir / "external"
    fresh = not args.work_dir.exists()
    try:
        datalist = write_slabs(
            args.volume, data_dir, args.train_slices, args.gap, args.ratio, args.train_side, args.train_extra
        )
        names = write_external(args.external, external_dir, args.ratio, "../data/train.nii.gz") if args.external else []
    except (ValueError, OSError) as e:
        if fresh:  # a bad volume leaves nothing behind in a work folder this call created
            shutil.rmtree(args.work_dir, ignore_errors=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    common = {"bundle_root": str(root), "dataset_dir": str(data_dir), "modality": args.modality, "ratio": args.ratio}
    if args.prefix_mode is not None:  # the evaluation must correct the same interpolation as the training
        common["prefix_mode"] = args.prefix_mode
    if args.patch is not None:  # the network's depth is the patch depth: the evaluation windows follow it
        common["patch_size"] = list(args.patch)
        common["val_roi_size"] = [args.patch[0], 96, 96]
    overrides = {cid: getattr(args, opt) for opt, cid in TRAIN_OPTIONS.items() if getattr(args, opt) is not None}
    if args.loss is not None:
        overrides["loss"] = LOSSES[args.loss]
    # never validate on the held-out slab during training: nothing is selected on it
    overrides["val_interval"] = 10**9
    start = time.perf_counter()
    run("training", config_file=[str(CONFIGS / c) for c in ("train.json", "ct_train.json")], **common, **overrides)
    train_s = time.perf_counter() - start
    evaluate = [str(CONFIGS / c) for c in ("train.json", "ct_train.json", "evaluate.json", "ct_evaluate.json")]
    ckpt = str(root / "models" / "ct" / "checkpoint_final.pt")
    scoring = {} if args.tta_flip_axes is None else {"tta_flip_axes": list(args.tta_flip_axes)}
    run("evaluating", config_file=evaluate, **common, **scoring, ckpt_path=ckpt)
    summary = json.loads((root / "eval" / "ct" / "thin_slice_summary.json").read_text())
    unit = "HU" if args.modality == "CT" else "intensity units"
    external = {}
    if names:
        external_eval = root / "eval" / "ct_external"
        run("evaluating", config_file=evaluate, **{**common, "dataset_dir": str(external_dir)}, **scoring,
            ckpt_path=ckpt, output_dir=str(external_eval))  # fmt: skip
        external = external_scores(external_eval / "thin_slice_per_volume.csv", names)
    print(f"\nheld-out slab, ratio {args.ratio}, training overrides {overrides}, train {train_s:.0f} s"
          + (f", also trained on {', '.join(map(str, args.train_extra))}" if args.train_extra else ""))  # fmt: skip
    print(f"{'method':<10} {'subset':<8} {'PSNR dB':>8} {'SSIM':>7} {'MAE ' + unit:>22}")
    for subset in ("missing", "all"):
        for method in ("model", *BASELINES):
            print(
                f"{method:<10} {subset:<8} {summary[f'{method}_psnr_{subset}']:8.3f} "
                f"{summary[f'{method}_ssim_{subset}']:7.4f} {summary[f'{method}_mae_{subset}']:22.3f}"
            )
    won = margins(summary)
    for baseline, m in won.items():
        print(
            f"model vs {baseline} (missing slices; > 0: model better): PSNR {m['psnr']:+.3f} dB, "
            f"SSIM {m['ssim']:+.4f}, MAE {m['mae']:+.3f} {unit}"
        )
    beats = beats_both(won)
    print(f"model beats both interpolations on PSNR, SSIM and MAE: {'yes' if beats else 'no'}")
    for name, scores in external.items():
        print(f"\nexternal volume {name} (whole, missing slices): "
              + ", ".join(f"{method} {scores[method]['psnr']:.3f} dB / {scores[method]['ssim']:.4f} / "
                          f"{scores[method]['mae']:.3f}" for method in ("model", *BASELINES)))  # fmt: skip
        for baseline, m in scores["margins"].items():
            print(f"  model vs {baseline}: PSNR {m['psnr']:+.3f} dB, SSIM {m['ssim']:+.4f}, MAE {m['mae']:+.3f} {unit}")
        print(f"  beats both on PSNR, SSIM and MAE: {'yes' if scores['beats_both'] else 'no'}")
    result = {"argv": sys.argv[1:] if argv is None else list(argv), "train_seconds": train_s, "overrides": overrides,
              "scoring_overrides": scoring,
              "training_volumes": [item["image"] for item in datalist["training"]],
              "summary": summary, "margins_missing": won, "beats_both": beats, "external": external}  # fmt: skip
    (args.work_dir / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
