"""
Benchmark the four SparseSSPNet topologies on one patch: parameters, GFLOP, train-step and inference time, peak RSS.

Every (topology, precision) runs in its own subprocess so that peak RSS belongs to that configuration alone.
Prints a Markdown table; medians over ``--repeats`` timed runs after ``--warmup`` untimed ones. CPU only and a
quick look; ``scripts/benchmark.py`` is the full benchmark (config-built model, full-volume time, CUDA, files).

    python scripts/benchmark_topologies.py                      # 1x1x32x128x128, r=4, fp32 and bf16
    python scripts/benchmark_topologies.py --precisions fp32 --topologies 3to2d 3d
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from sparsessp_monai.experiments import benchmarking as bm
from sparsessp_monai.experiments.benchmarking import REFERENCE_GFLOP
from sparsessp_monai.networks import TOPOLOGIES, SparseSSPNet


def build(args: argparse.Namespace, topology: str) -> SparseSSPNet:
    return SparseSSPNet(
        depth=args.depth,
        topology=topology,
        z_mapping=args.z_mapping,
        ratio=args.ratio,
        features_3d=args.features_3d,
        features_2d=args.features_2d,
        num_tasks=args.num_tasks,
    )


def measure(args: argparse.Namespace, topology: str, precision: str) -> dict:
    """Measure one configuration in this process (shared helpers of :mod:`sparsessp_monai.experiments.benchmarking`)."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    net = build(args, topology)
    in_depth = args.depth // args.ratio if args.z_mapping == "suffix" else args.depth
    x = torch.randn(args.batch, 1, in_depth, args.size, args.size)
    target = torch.randn(args.batch, 1, args.depth, args.size, args.size)
    task = torch.zeros(args.batch, dtype=torch.long) if args.num_tasks else None
    gflop = bm.count_gflop(net, x, task)
    timings = bm.time_patch(net, x, target, task, precision, args.warmup, args.repeats)
    return {
        "topology": topology,
        "precision": precision,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "gflop": gflop,
        **timings,
        "peak_rss_mib": bm.peak_memory_mib(device),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES), choices=list(TOPOLOGIES))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--size", type=int, default=128, help="patch height and width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ratio", type=int, default=4)
    p.add_argument("--z-mapping", default="prefix", choices=["prefix", "suffix"])
    p.add_argument("--features-3d", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--features-2d", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--num-tasks", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", nargs=2, metavar=("TOPOLOGY", "PRECISION"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args, *args.worker)))
        return 0
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    rows = []
    for topology in args.topologies:
        for precision in args.precisions:
            cmd = [sys.executable, __file__, *passthrough, "--worker", topology, precision]
            try:
                rows.append(bm.run_worker(cmd))
            except RuntimeError as exc:
                sys.stderr.write(f"{exc}\n")
                return 1
    print(
        f"Patch {args.batch}x1x{args.depth}x{args.size}x{args.size}, r={args.ratio}, z-mapping {args.z_mapping}, "
        f"features_3d={args.features_3d}, features_2d={args.features_2d}, {args.threads} threads, "
        f"torch {torch.__version__}; medians of {args.repeats} runs.\n"
    )
    header = ["topology", "precision", "params (M)", "GFLOP/patch", "vs reference", "train step (s)", "inference (s)",
              "peak RSS (MiB)"]
    body = [[r["topology"], r["precision"], f"{r['params_m']:.2f}", f"{r['gflop']:.1f}",
             f"{r['gflop'] / REFERENCE_GFLOP:.3f}", f"{r['train_s']:.3f}", f"{r['infer_s']:.3f}",
             f"{r['peak_rss_mib']:.0f}"] for r in rows]
    print(bm.markdown_table(header, body, "ll" + "r" * 6), end="")
    by = {(r["topology"], r["precision"]): r for r in rows}
    for precision in args.precisions:
        if ("3d", precision) in by and ("3to2d", precision) in by:
            a, b = by[("3d", precision)], by[("3to2d", precision)]
            print(
                f"\n{precision}: 3to2d vs 3d: train step {a['train_s'] / b['train_s']:.1f}x faster, "
                f"inference {a['infer_s'] / b['infer_s']:.1f}x faster, {a['gflop'] / b['gflop']:.1f}x fewer GFLOP."
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
