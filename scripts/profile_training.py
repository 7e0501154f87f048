"""
Profile the default training iteration of ``bundle/configs/train.json`` on this machine (library:
:mod:`sparsessp_monai.experiments.profiling`): per stage (data, forward, loss, backward, optimiser, handlers), per
operator (``torch.profiler``, allocator included), kernel time and minor page faults per iteration, and the achieved
GFLOP/s against the fp32 GEMM rate measured in the same process.

Writes ``<out>/profile_<capability>_<precision>.md`` (the command line and date at the top).

    python scripts/profile_training.py --precision fp32 --threads 2
    python scripts/profile_training.py --precision bf16                     # where the CPU has native bf16
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/profile_training.py   # as an AVX2-only CPU
    python scripts/profile_training.py --override keep_freed_memory=false   # without the allocator setting
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from sparsessp_monai.experiments.profiling import STAGES, profile_training  # noqa: E402
from sparsessp_monai.io.publish import atomic_write_text  # noqa: E402

CPU_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")
"""Environment variables that change which kernels run (an imitated CPU kind) or how many threads: quoted in the
report's command line when set."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "bundle" / "configs" / "train.json"))
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--iterations", type=int, default=6, help="profiled iterations (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON", help="config override")
    p.add_argument("--bundle-root", default=None, help="bundle root of the run (default: a temporary folder)")
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--quick", action="store_true", help="tiny demo data and patch (tests)")
    return p.parse_args(argv)


def _overrides(args: argparse.Namespace, root: str) -> dict:
    out = {"bundle_root": root, "device": "$torch.device('cpu')", "bf16": args.precision == "bf16"}
    if args.quick:
        out.update({"demo#num_per_structure": 2, "demo#shape": [16, 32, 32], "structures": ["dna", "membrane"],
                    "patch_size": [8, 32, 32], "samples_per_volume": 1,
                    "network_def#features_3d": [4, 8], "network_def#features_2d": [8, 16]})
    for item in args.override:
        key, _, value = item.partition("=")
        if not _:
            raise SystemExit(f"--override needs ID=JSON, got {item!r}")
        out[key] = json.loads(value)
    return out


def report(result: dict, command: str, capability: str, precision: str) -> str:
    """The markdown of one profile."""
    stages = result["stages"]
    total = sum(stages.values())
    rows = "\n".join(f"| {s} | {stages[s] * 1000:.1f} | {100 * stages[s] / total:.1f}% |" for s in STAGES)
    cpu = result["user_s"] + result["sys_s"]
    convs = result["convolutions"]
    conv_gflop = sum(c["gflop"] for c in convs)
    conv_s = sum(c["ms"] for c in convs) / 1e3
    conv_rows = "\n".join(
        f"| `{c['name']}` | {'x'.join(map(str, c['input']))} | {'x'.join(map(str, c['kernel']))} | {c['gflop']:.2f} | "
        f"{c['ms']:.1f} | {c['gflops']:.1f} | {100 * c['gemm_fraction']:.0f}% |" for c in convs)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"""# Training-iteration profile ({capability}, {precision})

Command: `{command}`

Date: {date}; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {capability},
{platform.processor() or platform.machine()}. {result['iterations']} profiled iterations of batch
{result['batch']} x {result['patch']} after the warm-up.

## Per iteration

- median iteration: {result['step_s']:.3f} s; CPU {cpu:.3f} s, of which kernel (system) {result['sys_s']:.3f} s
  ({100 * result['sys_s'] / max(cpu, 1e-9):.1f}%); {result['minor_faults']:.0f} minor page faults
- forward + backward: {result['gflop_per_step']:.1f} GFLOP (3x the forward count), achieved
  {result['achieved_gflops']:.1f} GFLOP/s = {100 * result['gemm_fraction']:.0f}% of this process's fp32 GEMM rate
  ({result['gemm_gflops']:.1f} GFLOP/s, 2048x2048 matmul)
- peak resident memory of the process: {result['peak_rss_mib']:.0f} MiB

| stage | median ms | share |
|---|---:|---:|
{rows}

## Convolutions alone

Each convolution of the network timed by itself (forward + backward, a copy of the layer on a random input of the
shape and memory format it sees in this step, median of 5, {result['layer_precision']}), against this process's
{result['layer_precision']} GEMM rate ({result['layer_gemm_gflops']:.1f} GFLOP/s).

- all of them together: {conv_gflop:.1f} GFLOP in {conv_s * 1e3:.0f} ms = {conv_gflop / conv_s:.1f} GFLOP/s =
  **{100 * conv_gflop / conv_s / result['layer_gemm_gflops']:.0f}% of the GEMM rate**
- they are {100 * conv_gflop / result['gflop_per_step']:.0f}% of the step's FLOP count, and the rest of the step
  only adds time: this is the most the whole step can reach with these layers and shapes

| layer | input | kernel | GFLOP | ms | GFLOP/s | of GEMM |
|---|---|---|---:|---:|---:|---:|
{conv_rows}

## Operators (self CPU time; memory columns from the profiler)

```
{result['operators']}
```
"""


def main(argv: list[str] | None = None) -> int:
    """Profile, print the report and write it to ``--out``."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # the variables that imitate another CPU kind belong to the command that made the report
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in CPU_ENV if k in os.environ]
    command = " ".join([*env, "python", shlex.join(["scripts/profile_training.py",
                                                    *(sys.argv[1:] if argv is None else argv)])])
    capability = torch.backends.cpu.get_cpu_capability()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.bundle_root or tmp
        result = profile_training(args.config, _overrides(args, root), args.iterations, args.warmup)
    text = report(result, command, capability, args.precision)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"profile_{capability.lower()}_{args.precision}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
