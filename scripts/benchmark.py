"""
Benchmark the bundle's network and the four SparseSSP topologies side by side.

For the default model of ``bundle/configs/train.json`` (``network_def``, built through ``monai.bundle.ConfigParser``)
and the same config with ``topology`` set to each of 3d / 2d / 2to3d: parameters, GFLOP per patch, median train
step and per-patch inference time, peak memory, and the time to predict a full 64x232x344 volume from its sparse
stack (prefix resampling + Gaussian sliding windows, roi and overlap from ``bundle/configs/inference.json``), in
fp32 and bf16 autocast. With a trained checkpoint (``bundle/models/model.pt`` by default) it also reports how much
bf16 changes the predictions on the demo validation volumes.

Every measurement runs in a fresh subprocess, so the peak RSS (CPU) belongs to that configuration alone.
Writes ``<out>/benchmark_<device>.csv``, ``.md`` (the command line at the top) and ``.png``.

    python scripts/benchmark.py                           # CPU (or CUDA if available), into docs/
    python scripts/benchmark.py --device cuda --full-volume all
    python scripts/benchmark.py --quick --out /tmp/bench  # tiny shapes, for tests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from sparsessp_monai.engines import keep_freed_memory  # noqa: E402
from sparsessp_monai.experiments import benchmarking as bm  # noqa: E402
from sparsessp_monai.experiments.profiling import gemm_gflops  # noqa: E402
from sparsessp_monai.io.publish import atomic_write_text  # noqa: E402
from sparsessp_monai.networks import TOPOLOGIES, channels_last_3d  # noqa: E402


def default_topology(args: argparse.Namespace) -> str:
    """The topology of the training config's ``network_def`` (the bundle default the other rows are compared to)."""
    return str(bm.load_config(args.config).get_parsed_content("network_def#topology"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "bundle" / "configs" / "train.json"), help="training config")
    p.add_argument(
        "--inference-config", default=str(ROOT / "bundle" / "configs" / "inference.json"), help="roi and overlap"
    )
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES), choices=list(TOPOLOGIES))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--volume-shape", type=int, nargs=3, default=[64, 232, 344], metavar=("Z", "Y", "X"))
    p.add_argument("--ratio", type=int, default=4, help="acquisition ratio of the sparse stack")
    p.add_argument(
        "--full-volume",
        default="default",
        choices=["default", "all", "none"],
        help="full-volume timing for the default model only, for every topology, or not at all",
    )
    p.add_argument("--checkpoint", default=None, help="trained model.pt for the bf16 accuracy check ('none' skips)")
    p.add_argument("--val-limit", type=int, default=12, help="validation volumes for the bf16 accuracy check")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per patch measurement (median)")
    p.add_argument("--volume-repeats", type=int, default=3, help="timed full-volume runs (median)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON", help="config override")
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--quick", action="store_true", help="tiny shapes and one repeat (tests)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.volume_shape = [16, 40, 56]
        args.warmup, args.repeats, args.volume_repeats = 1, 1, 1
        args.val_limit = min(args.val_limit, 2)
    return args


def config_overrides(args: argparse.Namespace) -> dict:
    """Overrides of the training config: ``--override`` pairs, plus tiny shapes in ``--quick`` mode."""
    out: dict = {}
    if args.quick:
        out.update({"patch_size": [8, 32, 32], "val_roi_size": [8, 32, 32], "demo#shape": [16, 32, 32]})
        out["demo#num_per_structure"] = 2
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--override must be ID=JSON, got {item!r}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a plain string such as a path
    return out


def inference_settings(args: argparse.Namespace) -> dict:
    """roi, overlap, sliding-window batch and stitching (MONAI's or slab-wise) of the inference config (the roi
    follows the patch in quick mode)."""
    cfg = bm.load_config(args.inference_config)
    roi = list(cfg["roi_size"]) if not args.quick else [8, 32, 32]
    slab = cfg["inferer"]["inferer"]["_target_"].endswith("SlabSlidingWindowInferer")
    return {
        "roi_size": roi,
        "overlap": float(cfg["overlap"]),
        "sw_batch_size": int(cfg["sw_batch_size"]),
        "slab": slab,
    }


def make_network(args: argparse.Namespace, topology: str, device: torch.device) -> torch.nn.Module:
    """The config's ``network_def`` with its topology replaced, on ``device``."""
    overrides = {**config_overrides(args), "network_def#topology": topology}
    # as the configs' "network" id builds it: 3D convolution weights channels-last
    return channels_last_3d(bm.build_network(args.config, overrides)).to(device)


def _task(net: torch.nn.Module, device: torch.device) -> torch.Tensor | None:
    return torch.zeros(1, dtype=torch.long, device=device) if getattr(net, "num_tasks", 0) else None


def measure_patch(args: argparse.Namespace, topology: str, precision: str, device: torch.device) -> dict:
    """Parameters, GFLOP, train-step and inference time and peak memory on one roi-sized patch."""
    torch.manual_seed(0)
    net = make_network(args, topology, device)
    roi = inference_settings(args)["roi_size"]
    depth = net.in_depth if getattr(net, "z_mapping", "prefix") == "suffix" else roi[0]
    x = torch.randn(1, 1, depth, roi[1], roi[2], device=device)
    target = torch.randn(1, 1, roi[0], roi[1], roi[2], device=device)
    task = _task(net, device)
    gflop = bm.count_gflop(net, x, task)
    bm.reset_peak_memory(device)
    times = bm.time_patch(net, x, target, task, precision, args.warmup, args.repeats)
    peak = bm.peak_memory_mib(device)
    # the GEMM rate of this same process (threads, clocks, neighbours): what the achieved rates are a fraction of
    gemm = gemm_gflops() if device.type == "cpu" else None
    train_rate, infer_rate = 3 * gflop / times["train_s"], gflop / times["infer_s"]  # backward ~ 2x forward
    return {
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "gflop": gflop,
        **times,
        "patch_peak_mib": peak,
        "train_gflops": train_rate,
        "infer_gflops": infer_rate,
        "gemm_gflops": gemm,
        "train_gemm_fraction": None if gemm is None else train_rate / gemm,
        "infer_gemm_fraction": None if gemm is None else infer_rate / gemm,
    }


def measure_volume(args: argparse.Namespace, topology: str, precision: str, device: torch.device) -> dict:
    """Full-volume prediction time from the sparse stack of a random ``--volume-shape`` volume."""
    from monai.data import MetaTensor

    from sparsessp_monai.transforms import SubsampleZ

    torch.manual_seed(0)
    net = make_network(args, topology, device)
    settings = inference_settings(args)
    volume = MetaTensor(torch.randn(1, *args.volume_shape, device=device))
    sparse = SubsampleZ(ratio=args.ratio)(volume)
    bm.reset_peak_memory(device)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    warmup = 1 if args.volume_repeats > 1 else 0
    seconds = bm.time_full_volume(
        net,
        sparse,
        _task(net, device),
        precision,
        settings["roi_size"],
        settings["overlap"],
        settings["sw_batch_size"],
        slab=settings["slab"],
        warmup=warmup,
        repeats=args.volume_repeats,
    )
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds per run: on a shared machine, CPU time / threads bounds what an idle machine would take
    cpu_s = usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
    cpu = cpu_s / bm.timed_calls(warmup, args.volume_repeats)
    return {"volume_s": seconds, "volume_cpu_s": cpu, "volume_peak_mib": bm.peak_memory_mib(device)}


def measure_bf16_accuracy(args: argparse.Namespace, checkpoint: str, device: torch.device) -> dict:
    """Max / mean absolute difference and R2 change of bf16 vs fp32 predictions of a trained model."""
    from monai.data import Dataset
    from monai.inferers import SlidingWindowInferer

    from sparsessp_monai.engines.inferers import AutocastInferer
    from sparsessp_monai.metrics import compute_r2

    parser = bm.load_config(args.config, config_overrides(args))
    net = parser.get_parsed_content("network_def").to(device)
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {checkpoint} does not match the config's network_def: {exc}") from exc
    net.eval()
    parser.get_parsed_content("prepare_data")  # the demo data, when the config trains on it
    items = parser.get_parsed_content("val_datalist")[: args.val_limit]
    data = Dataset(items, transform=parser.get_parsed_content("validate#preprocessing"))
    settings = inference_settings(args)
    window = SlidingWindowInferer(
        roi_size=list(parser.get_parsed_content("val_roi_size")),
        sw_batch_size=settings["sw_batch_size"],
        overlap=settings["overlap"],
        mode="gaussian",
    )
    fp32, bf16 = AutocastInferer(window, enabled=False), AutocastInferer(window, enabled=True)
    max_abs, abs_sum, count, r2_fp32, r2_bf16 = 0.0, 0.0, 0, [], []
    with torch.inference_mode():
        for item in data:
            x = item["image"][None].to(device)
            y = item["label"][None].to(device)
            task = torch.as_tensor([item["task"]], device=device) if net.num_tasks else None
            a, b = fp32(x, net, task), bf16(x, net, task)
            diff = (a - b).abs()
            max_abs = max(max_abs, float(diff.max()))
            abs_sum += float(diff.double().sum())
            count += diff.numel()
            r2_fp32.append(float(compute_r2(a, y)))
            r2_bf16.append(float(compute_r2(b, y)))
    if not count:
        raise ValueError("the config's validation datalist is empty: nothing to compare bf16 on.")
    mean = sum(r2_fp32) / len(r2_fp32), sum(r2_bf16) / len(r2_bf16)
    return {
        "volumes": len(r2_fp32),
        "max_abs_diff": max_abs,
        "mean_abs_diff": abs_sum / count,
        "r2_fp32": mean[0],
        "r2_bf16": mean[1],
        "r2_change": mean[1] - mean[0],
    }


def worker(args: argparse.Namespace) -> dict:
    """Run one measurement described by ``--worker`` JSON in this (fresh) process."""
    job = json.loads(args.worker)
    keep_freed_memory()  # as the bundle's configs do first in `initialize`
    torch.set_num_threads(args.threads)
    device = bm.resolve_device(args.device)
    if job["kind"] == "patch":
        return measure_patch(args, job["topology"], job["precision"], device)
    if job["kind"] == "volume":
        return measure_volume(args, job["topology"], job["precision"], device)
    if job["kind"] == "accuracy":
        return measure_bf16_accuracy(args, job["checkpoint"], device)
    raise ValueError(f"unknown worker job {job!r}")


def default_checkpoint(args: argparse.Namespace) -> str | None:
    """``--checkpoint``, else ``bundle/models/model.pt`` if it exists (not in quick mode: its shapes differ)."""
    if args.checkpoint is not None:
        if args.checkpoint.lower() == "none":
            return None
        if not Path(args.checkpoint).is_file():
            raise ValueError(f"checkpoint not found: {args.checkpoint}")
        return args.checkpoint
    path = ROOT / "bundle" / "models" / "model.pt"
    return str(path) if path.is_file() and not args.quick else None


def machine_line(device: torch.device, threads: int) -> str:
    """One line describing where the numbers come from."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        where = f"{cpu}, {threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    return f"{where}; torch {torch.__version__}, Python {platform.python_version()}"


def _rate(row: dict, kind: str) -> str:
    """``"<GFLOP/s> (<fraction of the GEMM rate>)"`` of the train step or inference of a row."""
    rate, fraction = row.get(f"{kind}_gflops"), row.get(f"{kind}_gemm_fraction")
    if rate is None:
        return "n/a"
    return f"{rate:.1f}" + ("" if fraction is None else f" ({100 * fraction:.0f}%)")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(
    args: argparse.Namespace,
    device: torch.device,
    rows: list[dict],
    accuracy: dict | None,
    command: str,
    png_name: str,
) -> str:
    """The Markdown report: command, date, machine, per-topology table, full-volume table, bf16 accuracy."""
    settings = inference_settings(args)
    default = default_topology(args)
    roi = settings["roi_size"]
    lines = [
        f"# Benchmark ({device.type}){' — quick mode, not representative' if args.quick else ''}\n",
        f"Command: `{command}`\n",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {machine_line(device, args.threads)}.\n",
        f"Network: `network_def` of `{Path(args.config).name}` (the bundle default is topology {default}; "
        "other rows change only `topology`). Patch 1x1x" + "x".join(map(str, roi)) + f", r={args.ratio}. "
        f"Medians of {args.repeats} runs after {args.warmup} warm-up runs; every row measured in a fresh process "
        f"({'peak torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'peak RSS of that process'}). "
        f"Reference implementation: {bm.REFERENCE_GFLOP:.0f} GFLOP per 32x128x128 patch.\n",
    ]
    header = ["topology", "precision", "params (M)", "GFLOP/patch", "train step (s)", "inference (s)",
              "train GFLOP/s (of GEMM)", "inference GFLOP/s (of GEMM)", "patch peak (MiB)", "full volume (s)",
              "volume peak (MiB)"]
    body = []
    for r in rows:
        name = r["topology"] + (" (default)" if r["topology"] == default else "")
        body.append([name, r["precision"], f"{r['params_m']:.2f}", f"{r['gflop']:.1f}", _fmt(r["train_s"]),
                     _fmt(r["infer_s"]), _rate(r, "train"), _rate(r, "infer"), f"{r['patch_peak_mib']:.0f}",
                     _fmt(r.get("volume_s"), 2), _fmt(r.get("volume_peak_mib"), 0)])
    lines.append(bm.markdown_table(header, body, "ll" + "r" * 9))
    gemm = [r["gemm_gflops"] for r in rows if r.get("gemm_gflops")]
    if gemm:
        lines.append(
            f"Achieved rates: forward + backward counted as 3x the forward GFLOP; in parentheses the fraction of the "
            f"fp32 GEMM rate (2048x2048 matmul) measured in the same process as the row (median over rows "
            f"{sorted(gemm)[len(gemm) // 2]:.0f} GFLOP/s). CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}.\n"
        )
    vol = "x".join(map(str, args.volume_shape))
    lines.append(
        f"Full volume: 1x1x{vol} from its r={args.ratio} sparse stack (prefix trilinear resampling + "
        f"SlidingWindowInferer, roi {'x'.join(map(str, roi))}, overlap {settings['overlap']}, gaussian, "
        f"sw_batch_size {settings['sw_batch_size']}); median of {args.volume_repeats}.\n"
    )
    default_fp32 = next(
        (r for r in rows if r["topology"] == default and r["precision"] == "fp32" and "volume_s" in r), None
    )
    if default_fp32 is not None and not args.quick and device.type == "cpu":
        verdict = "meets" if default_fp32["volume_s"] <= 15.0 else "MISSES"
        cpu = default_fp32.get("volume_cpu_s")
        idle = (
            f" It used {cpu:.1f} CPU-seconds per run, i.e. about {cpu / args.threads:.1f} s on {args.threads} "
            "otherwise idle core(s) (CPU time / threads; an upper bound when other processes share the cores, since "
            "waiting OpenMP threads spin)."
            if cpu
            else ""
        )
        lines.append(
            f"Target: default model, full volume fp32 <= 15 s on 2 CPU cores: {default_fp32['volume_s']:.1f} s "
            f"wall with {args.threads} thread(s) — {verdict} the target on this run.{idle} Load average when the "
            f"report was written: {os.getloadavg()[0]:.1f}.\n"
        )
    by = {(r["topology"], r["precision"]): r for r in rows}
    for precision in args.precisions:
        mixed = "3to2d" if default == "3d" else default  # the mixed-dimension network against the 3D UNet
        a, b = by.get(("3d", precision)), by.get((mixed, precision))
        if a and b:
            lines.append(
                f"{precision}: {mixed} vs 3d: train step {a['train_s'] / b['train_s']:.1f}x faster, "
                f"inference {a['infer_s'] / b['infer_s']:.1f}x faster, {a['gflop'] / b['gflop']:.1f}x fewer GFLOP.\n"
            )
    lines.append("## bf16 autocast on a trained model\n")
    if accuracy is None:
        lines.append("No checkpoint: bf16 accuracy not measured (pass `--checkpoint PATH`).\n")
    else:
        lines.append(
            f"Checkpoint `{accuracy['checkpoint']}`, {accuracy['volumes']} demo validation volumes, "
            "sliding-window prediction in fp32 and under bf16 autocast.\n"
        )
        lines.append(bm.markdown_table(
            ["max abs diff", "mean abs diff", "R2 fp32", "R2 bf16", "R2 change"],
            [[f"{accuracy['max_abs_diff']:.4f}", f"{accuracy['mean_abs_diff']:.5f}", f"{accuracy['r2_fp32']:.4f}",
              f"{accuracy['r2_bf16']:.4f}", f"{accuracy['r2_change']:+.4f}"]],
            "rrrrr",
        ))
    lines.append(f"\nPlot: `{png_name}`.\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every measurement in its own subprocess, then write the CSV, Markdown and PNG."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
        if args.worker:
            print(json.dumps(worker(args)))
            return 0
        device = bm.resolve_device(args.device)
        checkpoint = default_checkpoint(args)
        config_overrides(args)  # validate before spending minutes
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    tmp_data = None
    passthrough = list(argv)
    if args.quick and not any(o.startswith(("dataset_dir=", "demo_dir=")) for o in args.override):
        # quick mode: a tiny demo dataset in a temporary folder, never the bundle's (dataset_dir follows demo_dir)
        tmp_data = tempfile.mkdtemp(prefix="sparsessp-bench-")
        passthrough += ["--override", f"demo_dir={tmp_data}"]
    base = [sys.executable, str(Path(__file__).resolve()), *passthrough, "--device", device.type]
    try:
        rows = []
        volume_topologies = {"all": args.topologies, "default": [default_topology(args)], "none": []}[
            args.full_volume]
        for topology in args.topologies:
            for precision in args.precisions:
                job = {"kind": "patch", "topology": topology, "precision": precision}
                row = {"device": device.type, "topology": topology, "precision": precision}
                row.update(bm.run_worker([*base, "--worker", json.dumps(job)]))
                if topology in volume_topologies:
                    job["kind"] = "volume"
                    row.update(bm.run_worker([*base, "--worker", json.dumps(job)]))
                print(json.dumps(row), flush=True)
                rows.append(row)
        accuracy = None
        if checkpoint is not None:
            job = {"kind": "accuracy", "checkpoint": str(Path(checkpoint).resolve())}
            accuracy = bm.run_worker([*base, "--worker", json.dumps(job)])
            path = Path(checkpoint).resolve()
            accuracy["checkpoint"] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
            print(json.dumps(accuracy), flush=True)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if tmp_data:
            shutil.rmtree(tmp_data, ignore_errors=True)

    out = Path(args.out)
    stem = f"benchmark_{device.type}{'_quick' if args.quick else ''}"
    command = "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in argv)
    csv_rows = [dict(r) for r in rows]
    if accuracy is not None:
        for r in csv_rows:
            r.update({f"bf16_{k}": v for k, v in accuracy.items() if k != "checkpoint"})
    groups = [f"{r['topology']} {r['precision']}" for r in rows]
    bm.bar_chart_png(
        out / f"{stem}.png",
        groups,
        {"train step (s)": [r["train_s"] for r in rows], "inference (s)": [r["infer_s"] for r in rows]},
        f"SparseSSP topologies, {device.type}",
        "seconds per patch",
    )
    bm.write_csv(out / f"{stem}.csv", csv_rows)
    md = render_markdown(args, device, rows, accuracy, command.strip(), f"{stem}.png")
    atomic_write_text(out / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
