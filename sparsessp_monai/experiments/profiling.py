"""
Profile of the bundle's own training iterations: per stage (Ignite / MONAI iteration events), per operator
(``torch.profiler``, allocator included), kernel time and page faults (``getrusage``), and the achieved FLOP rate
against this process's fp32 GEMM rate; and every convolution of the network timed alone (forward + backward on
the training batch's shapes), which bounds the rate the whole step can reach.
"""

from __future__ import annotations

import copy
import resource
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["STAGES", "convolution_rates", "gemm_gflops", "profile_training"]

STAGES = ("data", "forward", "loss", "backward", "optimizer", "handlers")
"""Stages of one ``SupervisedTrainer`` iteration, in order, as :func:`profile_training` times them."""


def gemm_gflops(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Median GFLOP/s of a ``size x size`` matrix product with this process's threads (the machine's GEMM rate)."""
    from sparsessp_monai.experiments.benchmarking import median_time

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / median_time(lambda: a @ b, torch.device("cpu"), warmup=2, repeats=repeats) / 1e9


_CONVOLUTIONS = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """Channels-last (2D or 3D) where ``x`` is stored so and not also contiguous, else the contiguous format."""
    cl = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    if x.dim() >= 4 and not x.is_contiguous() and x.is_contiguous(memory_format=cl):
        return cl
    return torch.contiguous_format


def _time_layer(
    module: torch.nn.Module, x: torch.Tensor, fmt: torch.memory_format, input_grad: bool, precision: str, warmup: int,
    repeats: int,
) -> tuple[float, float]:
    """(GFLOP, median seconds) of forward + backward of a copy of ``module`` on a random tensor shaped like ``x``."""
    from torch.utils.flop_counter import FlopCounterMode

    from sparsessp_monai.experiments.benchmarking import autocast, median_time

    layer = copy.deepcopy(module).train()
    data = torch.randn(x.shape, dtype=x.dtype, device=x.device).contiguous(memory_format=fmt)
    data.requires_grad_(input_grad)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        grad = torch.randn_like(layer(data))

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        data.grad = None
        with autocast(x.device, precision):
            out = layer(data)
        out.backward(grad.to(out.dtype))

    seconds = median_time(step, x.device, warmup=warmup, repeats=repeats)
    # backward: the input gradient and the weight gradient each cost a forward pass; no input gradient for the image
    return (3 if input_grad else 2) * counter.get_total_flops() / 1e9, seconds


def convolution_rates(
    network: torch.nn.Module, inputs: tuple[Any, ...], gemm: float, precision: str = "fp32", warmup: int = 2,
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """
    Every convolution of ``network`` timed alone: one forward pass of ``network(*inputs)`` records each
    convolution's input (shape and memory format); a copy of the layer then runs forward + backward on a random
    input of that shape and format (weight and input gradients; the first convolution, which sees the image, only
    the weight gradient, as in training), median of ``repeats``; under bf16 autocast for ``precision="bf16"``.

    Returns one dict per call site in forward order: ``name``, ``input`` (shape), ``kernel``, ``gflop`` (forward +
    backward: 3x the forward count, 2x for the first layer), ``ms``, ``gflops`` and ``gemm_fraction`` (``gflops /
    gemm``, the GEMM rate of the same precision). Identical layers on identical shapes are timed once.
    """
    seen: list[tuple[str, torch.nn.Module, torch.Tensor]] = []
    names = {m: n for n, m in network.named_modules()}
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((names[m], m, args[0])))
             for m in network.modules() if isinstance(m, _CONVOLUTIONS)]
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(*inputs)
    finally:
        for h in hooks:
            h.remove()
        network.train(was_training)
    rows: list[dict[str, Any]] = []
    timed: dict[tuple, tuple[float, float]] = {}
    for i, (name, module, x) in enumerate(seen):
        fmt = _memory_format(x)
        key = (repr(module), tuple(x.shape), fmt, i == 0)
        if key not in timed:
            timed[key] = _time_layer(module, x, fmt, i != 0, precision, warmup, repeats)
        gflop, seconds = timed[key]
        rows.append({"name": name, "input": tuple(x.shape), "kernel": tuple(module.kernel_size), "gflop": gflop,
                     "ms": seconds * 1e3, "gflops": gflop / seconds, "gemm_fraction": gflop / seconds / gemm})
    return rows


def _usage() -> tuple[float, float, int]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime, u.ru_stime, u.ru_minflt


def profile_training(
    config_file: str, overrides: Mapping[str, Any], iterations: int = 6, warmup: int = 2, row_limit: int = 20
) -> dict[str, Any]:
    """
    Run ``warmup + iterations`` iterations of the bundle's ``training`` (one epoch of that length, no validation)
    through :class:`monai.bundle.ConfigWorkflow` with ``overrides`` (bundle root, device, bf16 ...), and profile
    the last ``iterations``.

    Returns a dict: ``stages`` (median seconds per stage, :data:`STAGES`), ``step_s`` (median iteration),
    ``user_s`` / ``sys_s`` / ``minor_faults`` per iteration, ``peak_rss_mib``, ``gflop_per_step`` (forward and
    backward, 3x the forward count), ``achieved_gflops``, ``gemm_gflops`` and their ratio ``gemm_fraction``, and
    ``convolutions``: :func:`convolution_rates` on the training batch's shapes, and
    ``operators``: the profiler's table (top ``row_limit`` operators by self CPU time, memory columns included).
    """
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow
    from monai.engines.utils import IterationEvents
    from torch.profiler import ProfilerActivity, profile

    from sparsessp_monai.experiments.benchmarking import count_gflop

    changes = {
        **overrides,
        "train#trainer#max_epochs": 1,
        "train#trainer#epoch_length": warmup + iterations,
        "val_interval": 10**6,
        "ckpt_interval": 10**6,
        "use_tensorboard": False,
        "use_progress_bar": False,
    }
    configs = Path(config_file).parent
    wf = ConfigWorkflow(config_file=config_file, meta_file=str(configs / "metadata.json"),
                        logging_file=str(configs / "logging.conf"), run_id="training", workflow_type="train",
                        **changes)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    marks: dict[str, float] = {}
    stage_times: dict[str, list[float]] = {s: [] for s in STAGES}
    steps: list[float] = []
    usage: dict[str, tuple[float, float, int]] = {}
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)

    def mark(name: str):
        def handler(_engine) -> None:
            marks[name] = time.perf_counter()
        return handler

    trainer.add_event_handler(Events.GET_BATCH_STARTED, mark("batch_start"))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, mark("batch_end"))
    trainer.add_event_handler(Events.ITERATION_STARTED, mark("start"))
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, mark("forward"))
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, mark("loss"))
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, mark("backward"))
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, mark("optimizer"))

    def completed(engine) -> None:
        end = time.perf_counter()
        if engine.state.iteration == warmup:
            usage["start"] = _usage()
            prof.start()
        if engine.state.iteration > warmup:
            bounds = [marks["batch_start"], marks["batch_end"], marks["start"], marks["forward"], marks["loss"],
                      marks["backward"], marks["optimizer"], end]
            # data: fetching the batch; forward includes moving it to the device (prepare_batch)
            durations = [bounds[1] - bounds[0], bounds[3] - bounds[2], *(b - a for a, b in zip(bounds[3:], bounds[4:]))]
            for stage, d in zip(STAGES, durations):
                stage_times[stage].append(d)
            steps.append(end - marks["batch_start"])
        if engine.state.iteration == warmup + iterations:
            usage["end"] = _usage()
            prof.stop()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    # the batch of the first iteration (still one tensor before the trainer decollates it), for the FLOP count
    shapes: dict[str, Any] = {}
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED,
                              lambda e: shapes.setdefault("batch", tuple(e.state.output["image"].shape)))
    wf.run()
    wf.finalize()
    end_usage = usage["end"]

    user0, sys0, flt0 = usage["start"]
    n = len(steps)
    network = wf.parser.get_parsed_content("network")
    batch, *patch = shapes["batch"]
    device = next(network.parameters()).device
    x = torch.zeros(1, *patch, device=device)
    task = torch.zeros(1, dtype=torch.long, device=device) if getattr(network, "num_tasks", 0) else None
    was_training = network.training
    network.eval()
    gflop_step = 3 * count_gflop(network, x, task) * batch
    network.train(was_training)
    step_s = statistics.median(steps)
    achieved = gflop_step / step_s
    gemm = gemm_gflops()
    # the convolutions on the shapes of the training batch itself, in the precision of the run
    precision = "bf16" if changes.get("bf16") else "fp32"
    layer_gemm = gemm if precision == "fp32" else gemm_gflops(dtype=torch.bfloat16)
    batch_task = None if task is None else torch.zeros(batch, dtype=torch.long, device=device)
    layers = convolution_rates(network, (torch.zeros(batch, *patch, device=device), batch_task), layer_gemm,
                               precision)
    return {
        "iterations": n, "batch": batch, "patch": patch,
        "stages": {s: statistics.median(v) for s, v in stage_times.items()},
        "step_s": step_s,
        "user_s": (end_usage[0] - user0) / n, "sys_s": (end_usage[1] - sys0) / n,
        "minor_faults": (end_usage[2] - flt0) / n,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gflop_per_step": gflop_step, "achieved_gflops": achieved, "gemm_gflops": gemm,
        "gemm_fraction": achieved / gemm,
        "convolutions": layers, "layer_precision": precision, "layer_gemm_gflops": layer_gemm,
        "operators": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit),
    }
