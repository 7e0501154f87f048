"""
Profile of the bundle's own training iterations: per stage (Ignite / MONAI iteration events), per operator
(``torch.profiler``, allocator included), kernel time and page faults (``getrusage``), and the achieved FLOP rate
against this process's fp32 GEMM rate.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["STAGES", "gemm_gflops", "profile_training"]

STAGES = ("data", "forward", "loss", "backward", "optimizer", "handlers")
"""Stages of one ``SupervisedTrainer`` iteration, in order, as :func:`profile_training` times them."""


def gemm_gflops(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Median GFLOP/s of a ``size x size`` matrix product with this process's threads (the machine's GEMM rate)."""
    from sparsessp_monai.experiments.benchmarking import median_time

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / median_time(lambda: a @ b, torch.device("cpu"), warmup=2, repeats=repeats) / 1e9


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
    return {
        "iterations": n, "batch": batch, "patch": patch,
        "stages": {s: statistics.median(v) for s, v in stage_times.items()},
        "step_s": step_s,
        "user_s": (end_usage[0] - user0) / n, "sys_s": (end_usage[1] - sys0) / n,
        "minor_faults": (end_usage[2] - flt0) / n,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gflop_per_step": gflop_step, "achieved_gflops": achieved, "gemm_gflops": gemm,
        "gemm_fraction": achieved / gemm,
        "operators": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit),
    }
