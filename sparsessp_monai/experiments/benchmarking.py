"""
Shared pieces of the speed benchmarks (``scripts/benchmark.py``, ``scripts/benchmark_topologies.py``): building
the bundle's network from its config, timing a train step / a forward pass / a full-volume sliding-window
prediction, GFLOP counting, peak memory, running one measurement per fresh subprocess, and Markdown/CSV/PNG output.

Every timing is the median of ``repeats`` runs after ``warmup`` untimed ones, measured by
:class:`torch.utils.benchmark.Timer`, which synchronises the accelerator around each run so the time covers the
kernels and not just their launch.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.benchmark import Measurement, Timer
from torch.utils.flop_counter import FlopCounterMode

from sparsessp_monai.io.publish import atomic_write, atomic_write_text, csv_text

__all__ = [
    "REFERENCE_GFLOP",
    "TIMER_WARMUP_CALLS",
    "autocast",
    "bar_chart_png",
    "build_network",
    "count_gflop",
    "load_config",
    "markdown_table",
    "median_time",
    "peak_memory_mib",
    "reset_peak_memory",
    "resolve_device",
    "run_worker",
    "time_full_volume",
    "time_patch",
    "timed_calls",
    "write_csv",
]

REFERENCE_GFLOP = 476.0
"""GFLOP of one 32x128x128 forward pass of the SparseSSP reference implementation (from its paper)."""


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available) as a device; CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {name!r}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False.")
    return torch.device(name)


def load_config(config_file: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Any:
    """A :class:`monai.bundle.ConfigParser` of a bundle config with ``{id: value}`` overrides applied."""
    from monai.bundle import ConfigParser

    path = Path(config_file)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    parser = ConfigParser()
    parser.read_config(str(path))
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def build_network(
    config_file: str | os.PathLike, overrides: dict[str, Any] | None = None, net_id: str = "network_def"
) -> torch.nn.Module:
    """Instantiate the network definition ``net_id`` of a bundle config, so benchmarks follow the config."""
    net = load_config(config_file, overrides).get_parsed_content(net_id, instantiate=True)
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"config id {net_id!r} does not define a torch.nn.Module (got {type(net).__name__}).")
    return net


TIMER_WARMUP_CALLS = 2
"""Untimed calls ``torch.utils.benchmark.Timer.timeit`` makes before each timed block (its own warm-up)."""


def timed_calls(warmup: int, repeats: int) -> int:
    """How many times :func:`median_time` calls its function, e.g. to turn the CPU time it used into a per-run cost."""
    return warmup + max(1, repeats) * (1 + TIMER_WARMUP_CALLS)


def median_time(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """
    Median wall time in seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    Each run is its own one-call :meth:`torch.utils.benchmark.Timer.timeit` block, so the result is a median over
    runs and not the mean of a block; the Timer adds :data:`TIMER_WARMUP_CALLS` untimed calls before each block
    (see :func:`timed_calls`). ``device``: the CUDA device the Timer synchronises (made current while timing).
    """
    for _ in range(warmup):
        fn()
    # Timer runs with one thread unless told otherwise: keep the threads the caller set up
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    current = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with current:
        runs = [timer.timeit(number=1) for _ in range(max(1, repeats))]
    return Measurement.merge(runs)[0].median


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for ``precision == "bf16"``, a disabled context for ``"fp32"``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}.")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def count_gflop(net: torch.nn.Module, *inputs: Any) -> float:
    """GFLOP of one forward pass (``torch.utils.flop_counter``; a multiply-add counts as 2 FLOP) per batch item."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*inputs)
    return counter.get_total_flops() / 1e9 / int(inputs[0].shape[0])


def time_patch(
    net: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    task: torch.Tensor | None,
    precision: str,
    warmup: int = 2,
    repeats: int = 5,
    lr: float = 1e-4,
) -> dict[str, float]:
    """Median time of one Adam train step (MSE loss) and of one inference forward pass on a patch."""
    device = x.device
    opt = torch.optim.Adam(net.parameters(), lr)
    cast = autocast(device, precision)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with cast:
            loss = torch.nn.functional.mse_loss(net(x, task).float(), target)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.inference_mode(), cast:
            net(x, task)

    net.train()
    train_s = median_time(train_step, device, warmup, repeats)
    net.eval()
    infer_s = median_time(infer, device, warmup, repeats)
    return {"train_s": train_s, "infer_s": infer_s}


def time_full_volume(
    net: torch.nn.Module,
    sparse: torch.Tensor,
    task: torch.Tensor | None,
    precision: str,
    roi_size: Sequence[int],
    overlap: float,
    sw_batch_size: int = 2,
    prefix_mode: str = "trilinear",
    slab: bool = True,
    warmup: int = 1,
    repeats: int = 3,
) -> float:
    """
    Median time to predict a full volume from its sparse stack: prefix resampling to the full grid, then Gaussian
    sliding windows (:class:`~sparsessp_monai.engines.SlabSlidingWindowInferer` as in ``inference.json``, or with
    ``slab=False`` MONAI's :class:`~monai.inferers.SlidingWindowInferer`) under bf16 autocast or fp32.

    Args:
        net: network in eval mode on the target device.
        sparse: channel-first sparse stack ``(C, Z/r, Y, X)`` as a MetaTensor from ``SubsampleZ`` (on the device).
        task: task ids for a conditioned network, else ``None``.
        precision: ``"fp32"`` or ``"bf16"``.
        roi_size: sliding-window size ``(Z, Y, X)``.
        overlap: sliding-window overlap, as in the inference config.
        sw_batch_size: windows per forward pass.
        prefix_mode: z-mapping interpolation of :class:`~sparsessp_monai.transforms.PrefixResampleZ`.
        slab: stitch slab-wise (same result, no full-size weight map) instead of with MONAI's inferer.
        warmup: untimed runs.
        repeats: timed runs.
    """
    from monai.inferers import SlidingWindowInferer

    from sparsessp_monai.engines.inferers import AutocastInferer, SlabSlidingWindowInferer
    from sparsessp_monai.transforms import PrefixResampleZ

    window = SlabSlidingWindowInferer if slab else SlidingWindowInferer
    inferer = AutocastInferer(
        window(roi_size=list(roi_size), sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian"),
        enabled=precision == "bf16",
    )
    resample = PrefixResampleZ(mode=prefix_mode)

    def predict() -> torch.Tensor:
        with torch.inference_mode():
            full = resample(sparse)
            return inferer(full[None], net, task)

    net.eval()
    return median_time(predict, sparse.device, warmup, repeats)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak; the CPU RSS high-water mark cannot be reset, hence one subprocess per measurement."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory in MiB: ``torch.cuda.max_memory_allocated`` on CUDA, the process' RSS high-water mark on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def run_worker(cmd: Sequence[str], timeout: float | None = None) -> dict:
    """Run ``cmd`` in a fresh process and return the JSON object printed on its last stdout line.

    Raises:
        RuntimeError: the worker failed; its stderr is part of the message.
    """
    out = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=timeout)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise RuntimeError(f"benchmark worker failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one character per column (``l`` or ``r``), default left then right."""
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Write dict rows (union of their keys as columns, first-seen order, missing values empty) as CSV, atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return atomic_write_text(path, csv_text(columns, [[row.get(c, "") for c in columns] for row in rows]))


def bar_chart_png(
    path: str | os.PathLike,
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    ylabel: str,
) -> Path:
    """
    Grouped bar chart drawn with matplotlib, written atomically as a PNG: one group per entry of ``groups``
    (x axis, left to right), one bar per series (``series[name][g]`` is the bar of group ``g``), legend in
    ``series`` order. Returns ``path``.
    """
    # the object-oriented API without pyplot: no global backend or figure registry, nothing to close
    from matplotlib.figure import Figure

    names = list(series)
    fig = Figure(figsize=(max(6, 1.2 * len(groups) * max(1, len(names)) / 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(names))
    xs = np.arange(len(groups))
    for i, name in enumerate(names):
        ax.bar(xs + i * width - 0.4 + width / 2, series[name], width, label=name)
    ax.set_xticks(xs, groups, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
