"""
Real microscopy through the bundle: the one real paired brightfield -> DNA volume, and a real brightfield field.

``pair``: the fnet2017 hiPSC volume of ``../shared/data/microscopy`` (``fnet2017_hipsc_light.tif`` brightfield,
``fnet2017_hipsc_dna.tif`` Hoechst DNA; 32 x 128 x 128 Z, Y, X; about 0.30 um in Z and 0.49 um in Y/X, which the
files do not record, so this script writes them) is split as the data README prescribes: train on X in [0, 64),
evaluate on X in [64, 128), whole Z and Y. The halves are written as OME-TIFF with ``PhysicalSize`` into
``WORK/data`` with two datalists: ``datalist_train.json`` (the training half only) and ``datalist_eval.json``
(the evaluation half only). Then, for every ratio r, the bundle's own commands run in this process
(``monai.bundle.run``, the same code path as ``python -m monai.bundle run``; each command is printed and stored):

- ``training`` with ``train.json`` from scratch, and fine-tuned from ``--pretrained`` (a ``model.pt`` trained by
  the default command: train.json's ``pretrained_weights`` loads it into the network in ``initialize``). There is
  no validation during training (``val_interval`` > epochs), so no model is ever selected on the evaluation half:
  the final weights (``models/checkpoint_final.pt``) are evaluated.
- ``evaluating`` with ``evaluate.json`` merged on ``train.json`` on the evaluation half: the per-image R2, Pearson r
  and MSE the bundle computes (``NormalizeIntensityd`` z-scores input and target; the prediction is compared as
  it comes out of the network).
- ``--pretrained`` is also evaluated as it is, without any training on the real pair: the zero-shot figure.

Both trained models use the bundle's default six structures (the DNA items carry ``structure: dna``), so the
scratch and the fine-tuned network are the same architecture as the demo-trained one. Two trivial baselines are
scored on the same evaluation half with the same metric code: a constant prediction (the z-scored target's mean,
0; R2 = 0) and the z-scored brightfield itself as the prediction; the best affine map of the brightfield, fitted on
the evaluation half itself (R2 = r^2), is listed as an optimistic third. A PNG preview per run (input | prediction
| target, orthogonal maximum projections) and a combined one (input | zero-shot | scratch | fine-tuned | target)
are written; ``WORK/results.json`` and ``WORK/results.md`` hold the figures. One volume is a smoke test of the
real-data path, not a benchmark.

``aics``: the brightfield channel (0) of ``aics_12_881_bright_seg_ZCYX.tif`` (57 x 6 x 204 x 341, about 0.29 um)
made into a genuinely sparse stack (every ``--ratio``-th slice kept, ``PhysicalSizeZ`` = ratio x 0.29 written),
predicted with ``inference.json`` unchanged (overrides: dataset_dir, output_dir, predict_structures, bundle_root).

Examples (see docs/real_data.md for the figures and how long they take)::

    python -m monai.bundle run training --config_file bundle/configs/train.json --bundle_root /tmp/demo_model
    python scripts/real_pair.py pair --work_dir runs/real_pair --pretrained /tmp/demo_model/models/model.pt
    python scripts/real_pair.py aics --work_dir runs/real_aics --bundle_root /tmp/demo_model
    python scripts/real_pair.py pair --work_dir /tmp/quick --quick      # 1 epoch, tiny patches: a smoke test

Exits with 2 and a one-line message when an input file is missing.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "bundle" / "configs"
MICROSCOPY = REPO.parent / "shared" / "data" / "microscopy"
LIGHT = MICROSCOPY / "fnet2017_hipsc_light.tif"
DNA = MICROSCOPY / "fnet2017_hipsc_dna.tif"
AICS = MICROSCOPY / "aics_12_881_bright_seg_ZCYX.tif"

#: voxel size (Z, Y, X) in um of the fnet2017 pair (from the resize factors of pytorch_fnet 9eb05226)
FNET_SPACING_ZYX = (0.30, 0.49, 0.49)
#: the data README's split of the pair along X: train on [0, SPLIT_X), evaluate on [SPLIT_X, 128)
SPLIT_X = 64
#: z-step (um) of the AICS field when its file records none
AICS_Z_STEP = 0.29
STRUCTURE = "dna"
METRICS = ("r2", "pearson", "mse")

__all__ = [
    "AICS",
    "DNA",
    "FNET_SPACING_ZYX",
    "INITS",
    "LIGHT",
    "SPLIT_X",
    "baseline_scores",
    "bundle_command",
    "evaluate",
    "main",
    "markdown_table",
    "predict",
    "read_metrics",
    "run_bundle",
    "run_one",
    "train",
    "write_report",
    "write_sparse_brightfield",
    "write_split",
    "zscore",
]


def write_split(
    light: str | os.PathLike,
    dna: str | os.PathLike,
    out_dir: str | os.PathLike,
    spacing_zyx: Sequence[float] = FNET_SPACING_ZYX,
    split_x: int = SPLIT_X,
    flip_z: bool = False,
) -> Path:
    """
    Write the training half (X < ``split_x``) and the evaluation half (X >= ``split_x``) of a paired volume.

    ``out_dir/images/{train,eval}_{brightfield,dna}.ome.tif`` hold (Z, Y, X) float32 halves with ``spacing_zyx``
    as ``PhysicalSize``; ``out_dir/datalist_train.json`` lists the training half under ``training`` (and, so that
    the config's validation dataset can be built, under ``validation``: it is never run, see the module
    docstring) and ``out_dir/datalist_eval.json`` lists only the evaluation half, under ``validation``. The folder
    is staged and published whole (:func:`sparsessp_monai.io.staged_folder`); one already published from the same
    inputs and parameters is kept.

    Args:
        light: brightfield (signal) volume, (Z, Y, X) or (1, Z, Y, X).
        dna: the matching fluorescence (target) volume of the same shape.
        out_dir: output folder.
        spacing_zyx: voxel size (sz, sy, sx) in um written to every file.
        split_x: first X index of the evaluation half; both halves must be non-empty.
        flip_z: reverse the Z order of both volumes (the demo data's focus direction is the opposite of this
            stack's: defocus contrast changes sign with it, and a model trained on one order is tested on the other).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: the volumes differ in shape, are not single-channel 3D, or ``split_x`` leaves a half empty.
    """
    from sparsessp_monai.io import is_complete, read_ome_tiff, staged_folder, write_ome_tiff

    out = Path(out_dir)
    record = {
        "light": str(Path(light).resolve()),
        "dna": str(Path(dna).resolve()),
        "spacing_zyx": [float(s) for s in spacing_zyx],
        "split_x": int(split_x),
        "flip_z": bool(flip_z),
    }
    if is_complete(out, record):
        return out
    signal, _ = read_ome_tiff(light)
    target, _ = read_ome_tiff(dna)
    if signal.shape != target.shape or signal.shape[0] != 1:
        raise ValueError(f"expected two single-channel volumes of one shape, got {signal.shape} and {target.shape}.")
    if not 0 < split_x < signal.shape[-1]:
        raise ValueError(f"split_x={split_x} leaves a half empty (X size {signal.shape[-1]}).")
    if flip_z:
        signal, target = np.ascontiguousarray(signal[:, ::-1]), np.ascontiguousarray(target[:, ::-1])
    halves = {"train": np.s_[..., :split_x], "eval": np.s_[..., split_x:]}
    items = {}
    with staged_folder(out, record) as staging:
        for half, cut in halves.items():
            item = {"image": f"images/{half}_brightfield.ome.tif", "label": f"images/{half}_dna.ome.tif"}
            write_ome_tiff(staging / item["image"], signal[cut][0], spacing_zyx)
            write_ome_tiff(staging / item["label"], target[cut][0], spacing_zyx)
            items[half] = [{**item, "structure": STRUCTURE}]
        lists = {
            "datalist_train.json": {"training": items["train"], "validation": items["train"]},
            "datalist_eval.json": {"validation": items["eval"]},
        }
        for name, content in lists.items():
            (staging / name).write_text(json.dumps(content, indent=2) + "\n")
    return out


def zscore(volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(C, Z, Y, X) volume z-scored per channel exactly as the bundle does (MONAI ``NormalizeIntensity``)."""
    from monai.transforms import NormalizeIntensity

    return torch.as_tensor(NormalizeIntensity(channel_wise=True)(torch.as_tensor(volume, dtype=torch.float32)))


def baseline_scores(brightfield: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> dict:
    """
    Scores of trivial predictions of ``target`` from the same (C, Z, Y, X) region, both z-scored first.

    - ``constant``: the z-scored target's mean (0) everywhere: R2 = 0, MSE = 1, Pearson undefined (NaN).
    - ``brightfield``: the z-scored brightfield itself: R2 = 2 r - 1, MSE = 2 - 2 r with r its Pearson r.
    - ``brightfield_linear_fit``: the best affine map of the brightfield, least squares on this very region (an
      optimistic upper bound for any such map): R2 = r^2.

    Returns:
        ``{name: {"r2", "pearson", "mse"}}`` as floats, from :func:`sparsessp_monai.metrics.regression_scores`
        (the metric classes of the bundle's evaluator).
    """
    from sparsessp_monai.metrics import regression_scores

    signal, label = zscore(brightfield), zscore(target)
    # least-squares slope of z-scored data is their correlation: the fit is r * signal
    r = float(regression_scores(signal[None], label[None])["pearson"][0])
    predictions = {"constant": torch.zeros_like(label), "brightfield": signal, "brightfield_linear_fit": r * signal}
    out = {}
    for name, pred in predictions.items():
        scores = regression_scores(pred[None], label[None])
        out[name] = {m: float(scores[m][0]) for m in METRICS}
    return out


def bundle_command(workflow: str, config_files: Sequence[str | os.PathLike], overrides: Mapping[str, Any]) -> str:
    """The ``python -m monai.bundle run`` command line equivalent to :func:`run_bundle` with these arguments."""
    files = [os.path.relpath(c, REPO) for c in config_files]
    parts = ["python", "-m", "monai.bundle", "run", workflow, "--config_file"]
    parts.append(files[0] if len(files) == 1 else json.dumps(files).replace('"', "'"))
    for key, value in overrides.items():
        parts += [f"--{key}", value if isinstance(value, str) else json.dumps(value).replace('"', "'")]
    return shlex.join(parts)


def run_bundle(workflow: str, config_files: Sequence[str | os.PathLike], overrides: Mapping[str, Any]) -> str:
    """Run a bundle workflow in this process (``monai.bundle.run``) and return its command line for the record."""
    from monai.bundle import run

    command = bundle_command(workflow, config_files, overrides)
    print(f"\n$ {command}", flush=True)
    run(workflow, config_file=[str(c) for c in config_files], **overrides)
    return command


def common_overrides(bundle_root: Path, ratio: int, patch: Sequence[int], roi: Sequence[int]) -> dict[str, Any]:
    """Overrides shared by training, evaluation and the preview: where, which ratio, which network depth."""
    return {
        "bundle_root": str(bundle_root),
        "ratio": int(ratio),
        "patch_size": [int(p) for p in patch],
        "val_roi_size": [int(r) for r in roi],
    }


def train(
    bundle_root: Path,
    data_dir: Path,
    ratio: int,
    epochs: int,
    patch: Sequence[int],
    roi: Sequence[int],
    samples: int,
    learning_rate: float | None,
    pretrained: str | os.PathLike | None = None,
    seed: int | None = None,
) -> str:
    """``training`` with train.json on ``data_dir/datalist_train.json`` into ``bundle_root`` (one step of
    ``samples`` random patches per epoch, no validation); ``learning_rate`` and ``seed`` None keep train.json's;
    returns the command line."""
    overrides = {
        **common_overrides(bundle_root, ratio, patch, roi),
        "dataset_dir": str(data_dir),
        "datalist_file": str(data_dir / "datalist_train.json"),
        "train#trainer#max_epochs": int(epochs),
        "val_interval": int(epochs) + 1,  # never validate: nothing is selected, the final weights are evaluated
        "ckpt_interval": int(epochs),
        "samples_per_volume": int(samples),
    }
    if learning_rate is not None:
        overrides["learning_rate"] = float(learning_rate)
    if seed is not None:
        overrides["seed"] = int(seed)
    if pretrained is not None:
        overrides["pretrained_weights"] = str(pretrained)
    return run_bundle("training", [CONFIGS / "train.json"], overrides)


def evaluate(
    bundle_root: Path, data_dir: Path, ratio: int, ckpt: Path, patch: Sequence[int], roi: Sequence[int]
) -> tuple[dict[str, float], str]:
    """``evaluating`` (evaluate.json on train.json) of ``ckpt`` on the evaluation half at ``ratio``; returns the
    evaluator's per-image metrics of that one image and the command line."""
    out = bundle_root / "eval_heldout"
    overrides = {
        **common_overrides(bundle_root, ratio, patch, roi),
        "dataset_dir": str(data_dir),
        "datalist_file": str(data_dir / "datalist_eval.json"),
        "ckpt_path": str(ckpt),
        "output_dir": str(out),
    }
    command = run_bundle("evaluating", [CONFIGS / "train.json", CONFIGS / "evaluate.json"], overrides)
    return read_metrics(out / "metrics_per_image.csv"), command


def read_metrics(csv_file: str | os.PathLike) -> dict[str, float]:
    """``{"r2", "pearson", "mse"}`` of the single image of a ``metrics_per_image.csv`` written by the bundle."""
    with open(csv_file, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise ValueError(f"{csv_file}: expected one evaluated image, got {len(rows)}.")
    return {m: float(rows[0][f"val_{m}"]) for m in METRICS}


def predict(
    data_dir: Path, ratio: int, ckpt: Path, patch: Sequence[int], roi: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The evaluator's computation for the preview: the evaluation half through train.json's validation transforms,
    network and inferer with the weights of ``ckpt`` (a plain state dict or a checkpoint with a ``model`` entry).

    Returns:
        ``(input, prediction, target)``, each (1, Z, Y, X) on the CPU: the network input (the sparse slices
        resampled back to the full grid), the prediction and the z-scored target.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")])
    parser.update(
        {
            **common_overrides(data_dir.parent, ratio, patch, roi),
            "dataset_dir": str(data_dir),
            "datalist_file": str(data_dir / "datalist_eval.json"),
        }
    )
    item = parser.get_parsed_content("validate#preprocessing")(parser.get_parsed_content("val_datalist")[0])
    network, inferer, device = (parser.get_parsed_content(k) for k in ("network", "validate#inferer", "device"))
    state = torch.load(ckpt, map_location=device, weights_only=True)
    network.load_state_dict(state.get("model", state))
    network.eval()
    with torch.no_grad():
        pred = inferer(item["image"][None].to(device), network, task=torch.tensor([item["task"]], device=device))
    return item["image"].cpu(), pred[0].float().cpu(), item["label"].cpu()


def markdown_table(results: Mapping[str, Any]) -> str:
    """The figures of a ``pair`` run as a markdown table (one row per ratio and initialisation)."""
    lines = ["| r | model | R2 | Pearson r | MSE | train wall s |", "|---|---|---|---|---|---|"]
    for run in results["runs"]:
        wall = f"{run['train_wall_s']:.0f}" if run.get("train_wall_s") is not None else "-"
        scores = " | ".join(f"{run[m]:.3f}" for m in METRICS)
        lines.append(f"| {run['ratio']} | {run['init']} | {scores} | {wall} |")
    for name, s in results["baselines"].items():
        pearson = "undefined" if np.isnan(s["pearson"]) else f"{s['pearson']:.3f}"
        # + 0.0 turns the constant baseline's -0.000 into 0.000
        lines.append(f"| any | baseline: {name} | {round(s['r2'], 3) + 0.0:.3f} | {pearson} | {s['mse']:.3f} | - |")
    return "\n".join(lines) + "\n"


INITS = ("zero-shot", "scratch", "fine-tuned")


def run_one(args: argparse.Namespace, data_dir: Path, ratio: int, init: str, roi: Sequence[int]) -> dict[str, Any]:
    """Train (unless zero-shot) and evaluate one model at ``ratio``; the record goes to its folder's result.json."""
    from sparsessp_monai.io import atomic_write_text

    root = Path(args.work_dir).absolute() / "runs" / f"r{ratio}_{init}"
    record: dict[str, Any] = {"ratio": ratio, "init": init, "train_wall_s": None}
    if init == "zero-shot":
        ckpt = Path(args.pretrained).absolute()
    else:
        start = time.perf_counter()
        weights = args.pretrained if init == "fine-tuned" else None
        record["train"] = train(
            root, data_dir, ratio, args.epochs, args.patch, roi, args.samples, args.lr, weights, args.seed
        )
        record["train_wall_s"] = time.perf_counter() - start
        ckpt = root / "models" / "checkpoint_final.pt"
    scores, record["evaluate"] = evaluate(root, data_dir, ratio, ckpt, args.patch, roi)
    record.update(scores, checkpoint=str(ckpt), epochs=args.epochs, samples=args.samples, patch=list(args.patch))
    atomic_write_text(root / "result.json", json.dumps(record, indent=2) + "\n")
    return record


def write_report(work: Path, patch: Sequence[int], command: str | None = None) -> dict[str, Any]:
    """
    Collect every ``work/runs/*/result.json`` into ``work/results.json`` / ``results.md`` with the baselines, and
    write the previews: per run ``preview_input_prediction_target.png`` and per ratio ``preview_r<r>.png`` (input |
    zero-shot | scratch | fine-tuned | target, the models that were run). Runs of one work folder may come from
    several invocations (e.g. one per ratio in parallel); this rebuilds the report from all of them.
    """
    from sparsessp_monai.io import atomic_write_text, read_ome_tiff, save_projection_preview

    data_dir = work / "data"
    eval_light, _ = read_ome_tiff(data_dir / "images" / "eval_brightfield.ome.tif")
    eval_dna, _ = read_ome_tiff(data_dir / "images" / "eval_dna.ome.tif")
    roi = list(eval_light.shape[1:])
    runs = [json.loads(f.read_text()) for f in sorted(work.glob("runs/*/result.json"))]
    runs.sort(key=lambda r: (r["ratio"], INITS.index(r["init"])))
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "command": command,
        "baselines": baseline_scores(eval_light, eval_dna),
        "runs": runs,
        "previews": {},
    }
    for ratio in sorted({r["ratio"] for r in runs}):
        panels: list[tuple[str, torch.Tensor]] = []
        for run in (r for r in runs if r["ratio"] == ratio):
            image, pred, label = predict(data_dir, ratio, Path(run["checkpoint"]), patch, roi)
            folder = work / "runs" / f"r{ratio}_{run['init']}"
            save_projection_preview(
                folder / "preview_input_prediction_target.png",
                [("input", image), ("prediction", pred), ("target", label)],
                FNET_SPACING_ZYX,
            )
            panels += [] if panels else [("input", image)]
            panels.append((run["init"], pred))
        panels.append(("target", label))
        name = f"preview_r{ratio}.png"
        save_projection_preview(work / name, panels, FNET_SPACING_ZYX)
        results["previews"][str(ratio)] = {"file": name, "panels": " | ".join(t for t, _ in panels)}
    atomic_write_text(work / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(work / "results.md", markdown_table(results))
    return results


def run_pair(args: argparse.Namespace) -> dict[str, Any]:
    """The ``pair`` command: split, then train / fine-tune / evaluate at every ratio, then the report."""
    from sparsessp_monai.io import read_ome_tiff

    work = Path(args.work_dir).absolute()
    data_dir = write_split(args.light, args.dna, work / "data", FNET_SPACING_ZYX, SPLIT_X, args.flip_z)
    roi = list(read_ome_tiff(data_dir / "images" / "eval_brightfield.ome.tif")[0].shape[1:])  # one window
    inits = [i for i in args.inits if args.pretrained or i == "scratch"]
    start = time.perf_counter()
    for ratio in args.ratios:
        for init in inits:
            run_one(args, data_dir, ratio, init, roi)
    print(f"trained and evaluated in {time.perf_counter() - start:.0f} s")
    command = shlex.join(["python", "scripts/real_pair.py", *sys.argv[1:]]) if args.record_argv else None
    results = write_report(work, args.patch, command)
    print("\n" + markdown_table(results))
    print(f"results: {work / 'results.json'}; previews: {work}/preview_r*.png")
    return results


def write_sparse_brightfield(
    source: str | os.PathLike, out_dir: str | os.PathLike, ratio: int = 4, channel: int = 0
) -> Path:
    """
    Write one channel of a (C, Z, Y, X) stack as a genuinely sparse acquisition: slices ``0::ratio`` only.

    The file ``out_dir/<source stem>_c<channel>_r<ratio>.ome.tif`` keeps the input's dtype and Y/X voxel sizes and
    records ``PhysicalSizeZ`` = ``ratio`` x the source's z-step (:data:`AICS_Z_STEP` when the source records none).

    Returns:
        The written file.

    Raises:
        ValueError: ``channel`` is out of range or the stack has fewer than ``ratio`` slices.
    """
    from sparsessp_monai.io import read_ome_tiff, write_ome_tiff
    from sparsessp_monai.transforms import SubsampleZ

    data, meta = read_ome_tiff(source)
    if not 0 <= channel < data.shape[0]:
        raise ValueError(f"{source}: channel {channel} is out of range for {data.shape[0]} channel(s).")
    sz, sy, sx = meta["spacing_zyx"]
    sparse = SubsampleZ(ratio)(data[channel : channel + 1])
    stem = Path(source).name.split(".")[0]
    return write_ome_tiff(
        Path(out_dir) / f"{stem}_c{channel}_r{ratio}.ome.tif", sparse, (ratio * (sz or AICS_Z_STEP), sy, sx)
    )


def run_aics(args: argparse.Namespace) -> Path:
    """The ``aics`` command: the sparse brightfield stack, then inference.json with overrides only."""
    work = Path(args.work_dir).absolute()
    sparse = write_sparse_brightfield(args.source, work / "sparse", args.ratio)
    overrides = {
        "bundle_root": str(Path(args.bundle_root).absolute()),
        "dataset_dir": str(sparse.parent),
        "output_dir": str(work / "output"),
        "predict_structures": [STRUCTURE],
    }
    run_bundle("inference", [CONFIGS / "inference.json"], overrides)
    print(f"predictions and previews: {work / 'output'}")
    return work / "output"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``pair`` or ``aics``; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pair = sub.add_parser("pair", help="train / fine-tune / evaluate on the real brightfield -> DNA pair")
    pair.add_argument("--work_dir", type=Path, default=REPO / "runs" / "real_pair")
    pair.add_argument("--light", type=Path, default=LIGHT, help="brightfield volume")
    pair.add_argument("--dna", type=Path, default=DNA, help="DNA fluorescence volume")
    pair.add_argument("--pretrained", type=Path, default=None, help="model.pt to fine-tune and to score zero-shot")
    pair.add_argument("--ratios", type=int, nargs="+", default=[1, 2, 4])
    pair.add_argument("--epochs", type=int, default=150, help="epochs, one step of --samples patches each")
    pair.add_argument("--samples", type=int, default=4, help="random patches per step")
    pair.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64], help="training patch (Z, Y, X)")
    pair.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (cosine), both inits; default: train.json's"
    )
    pair.add_argument(
        "--seed", type=int, default=None, help="train.json's seed (augmentation, initialisation); default: its own"
    )
    pair.add_argument(
        "--inits",
        nargs="+",
        choices=INITS,
        default=list(INITS),
        help="models (all but scratch need --pretrained)",
    )
    pair.add_argument(
        "--flip_z", action="store_true", help="reverse both volumes in Z first (the demo data's focus direction)"
    )
    pair.add_argument("--quick", action="store_true", help="1 epoch, 1 patch of 32 x 32 x 32, r = 4 only")
    pair.set_defaults(func=run_pair)
    aics = sub.add_parser("aics", help="sparse real brightfield field through inference.json")
    aics.add_argument("--work_dir", type=Path, default=REPO / "runs" / "real_aics")
    aics.add_argument("--source", type=Path, default=AICS, help="(Z, C, Y, X) stack; channel 0 is brightfield")
    aics.add_argument("--ratio", type=int, default=4)
    aics.add_argument("--bundle_root", type=Path, required=True, help="bundle root holding models/model.pt")
    aics.set_defaults(func=run_aics)
    args = parser.parse_args(argv)
    args.record_argv = argv is None
    if getattr(args, "quick", False):
        args.epochs, args.samples, args.patch, args.ratios = 1, 1, [32, 32, 32], [4]
    for name in ("light", "dna", "source", "pretrained"):
        path = getattr(args, name, None)
        if path is not None and not path.is_file():
            print(f"error: {path} not found (the real data live in ../shared/data, see its README).", file=sys.stderr)
            return 2
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
