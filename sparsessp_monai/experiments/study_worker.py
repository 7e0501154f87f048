"""
One variant of the study in its own process: ``python -m sparsessp_monai.experiments.study_worker SPEC RESULT``.

``SPEC`` is the JSON written by :func:`sparsessp_monai.experiments.study.run_variant` (config files, bundle root,
overrides, evaluation ratios, device). The worker

1. measures the cost of the variant's ``network_def`` (built by ``monai.bundle.ConfigParser`` with the same
   overrides): parameters, GFLOP per patch, fp32 train-step and per-patch inference time on one training batch
   (bf16 too where the device has native bf16), peak memory, with the helpers of
   :mod:`sparsessp_monai.experiments.benchmarking`;
2. trains it with :class:`monai.bundle.ConfigWorkflow` on ``train.json`` (run id ``training``, as the user's
   command), timing the trainer's iterations and the evaluator with Ignite timers;
3. reads the macro scores from the ``metrics_per_structure.csv`` the bundle's evaluator wrote, and evaluates the
   saved model at the other ratios with ``evaluate.json`` merged on ``train.json`` and ``ratio`` overridden;
4. writes the result JSON atomically.

A fresh process per variant means no state (threads, caches, RSS high-water mark, random generators) is shared.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["evaluate_bundle", "measure_cost", "read_scores", "run_variant", "train_bundle"]

_METRIC_COLUMNS = {"mse": "val_mse", "mae": "val_mae", "r2": "val_r2", "pearson": "val_pearson"}


def _cpu_seconds() -> float:
    """User + system CPU time of this process (on a shared machine it bounds the idle wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_cost(config_file: str, overrides: Mapping[str, Any], device: torch.device, warmup: int = 2,
                 repeats: int = 5) -> dict[str, float]:
    """
    Cost of the config's ``network_def`` on one training batch ``(batch_size * samples_per_volume, 1, *patch)``
    (the network's input depth for suffix z-mapping): parameters (M), GFLOP per patch, fp32 train-step time (Adam,
    MSE) and inference time per patch (s), bf16 times where the device has native bf16, and peak memory (MiB).
    """
    from sparsessp_monai.engines.bundle_utils import fast_bf16
    from sparsessp_monai.experiments import benchmarking as bm

    parser = bm.load_config(config_file, dict(overrides))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").to(device)
    patch = list(parser.get_parsed_content("patch_size"))
    batch = int(parser.get_parsed_content("batch_size")) * int(parser.get_parsed_content("samples_per_volume"))
    x = torch.randn(batch, 1, net.in_depth, patch[1], patch[2], device=device)
    y = torch.randn(batch, 1, patch[0], patch[1], patch[2], device=device)
    task = torch.zeros(batch, dtype=torch.long, device=device) if net.num_tasks else None
    out = {"params_m": sum(p.numel() for p in net.parameters()) / 1e6,
           "gflop": bm.count_gflop(net, x[:1], None if task is None else task[:1]), "batch": batch}
    bm.reset_peak_memory(device)
    precisions = ["fp32", "bf16"] if fast_bf16(device) else ["fp32"]
    for precision in precisions:
        times = bm.time_patch(net, x, y, task, precision, warmup, repeats)
        prefix = "" if precision == "fp32" else "bf16_"
        out[f"{prefix}train_step_s"] = times["train_s"]
        out[f"{prefix}infer_s"] = times["infer_s"] / batch
    out["cost_peak_mib"] = bm.peak_memory_mib(device)
    return out


def read_scores(folder: str | os.PathLike) -> dict[str, Any]:
    """Macro scores (the ``all`` row) and per-structure R2 of a bundle's ``metrics_per_structure.csv``."""
    with open(Path(folder) / "metrics_per_structure.csv", newline="", encoding="utf-8") as f:
        rows = {r["structure"]: r for r in csv.DictReader(f)}
    macro = rows["all"]
    per_structure = {s: float(r["val_r2"]) for s, r in rows.items() if s not in ("all", "all_images")}
    return {**{m: float(macro[col]) for m, col in _METRIC_COLUMNS.items()}, "images": int(macro["n_images"]),
            "r2_per_structure": per_structure}


def _workflow(config_file: str | list[str], run_id: str, workflow_type: str, overrides: Mapping[str, Any]):
    """A :class:`monai.bundle.ConfigWorkflow` with the bundle's metadata and logging config, initialised."""
    from monai.bundle import ConfigWorkflow

    first = Path(config_file if isinstance(config_file, str) else config_file[0])
    wf = ConfigWorkflow(
        config_file=config_file, meta_file=str(first.parent / "metadata.json"),
        logging_file=str(first.parent / "logging.conf"), run_id=run_id, workflow_type=workflow_type, **overrides,
    )
    wf.initialize()
    return wf


def train_bundle(config_file: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """
    Run the bundle's ``training`` with ``overrides`` (bundle root included) and time it: wall and CPU seconds of
    the whole workflow, mean seconds per trainer iteration (forward, backward, optimiser step; data loading and
    validation excluded), seconds in the evaluator, iterations and the trainer's class name, and the learning
    curve: one ``{"epoch", "iteration", "train_s", "r2"}`` per validation, ``train_s`` the training wall time up
    to it (validations excluded), for time-to-accuracy reports.
    """
    from ignite.engine import Events
    from ignite.handlers import Timer
    from monai.handlers import from_engine

    t0, c0 = time.perf_counter(), _cpu_seconds()
    wf = _workflow(config_file, "training", "train", overrides)
    trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    step = Timer(average=True).attach(trainer, start=Events.STARTED, resume=Events.ITERATION_STARTED,
                                      pause=Events.ITERATION_COMPLETED, step=Events.ITERATION_COMPLETED)
    train = Timer().attach(trainer, start=Events.STARTED, pause=Events.COMPLETED)
    val = Timer()  # summed over every validation run
    val.pause()
    evaluator.add_event_handler(Events.STARTED, val.resume)
    evaluator.add_event_handler(Events.COMPLETED, val.pause)
    curve: list[dict[str, float]] = []

    def record(engine) -> None:
        curve.append({"epoch": int(trainer.state.epoch), "iteration": int(trainer.state.iteration),
                      "train_s": train.value() - val.value(), "r2": float(engine.state.metrics.get("val_r2", "nan"))})

    evaluator.add_event_handler(Events.COMPLETED, record)  # after val.pause: the validation is excluded
    wf.run()
    wf.finalize()
    loss = from_engine(["loss"], first=True)(trainer.state.output)  # one value, or one per key
    return {
        "trainer": type(trainer).__name__, "iterations": int(trainer.state.iteration),
        "epochs": int(trainer.state.epoch), "loader_length": len(trainer.data_loader),
        "step_s": step.value(), "train_s": train.value() - val.value(), "val_s": val.value(),
        "bundle_s": time.perf_counter() - t0, "bundle_cpu_s": _cpu_seconds() - c0,
        "final_loss": float(loss[0] if isinstance(loss, (list, tuple)) else loss), "curve": curve,
    }


def evaluate_bundle(config_files: list[str], overrides: Mapping[str, Any], train_ratio: int, ratio: int,
                    output_dir: str) -> dict[str, Any]:
    """Evaluate the bundle's saved model (trained at ``train_ratio``) on data acquired at ``ratio``."""
    changes = {**overrides, "ratio": ratio, "network_def#ratio": train_ratio, "output_dir": output_dir}
    wf = _workflow(config_files, "evaluating", "eval", changes)
    wf.run()
    wf.finalize()
    return read_scores(output_dir)


def run_variant(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Cost, training and evaluation of one variant (see the module docstring); returns the result record."""
    device = torch.device("cuda:0" if spec["device"] == "cuda" else "cpu")
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    root = Path(spec["bundle_root"])
    overrides = {**spec["overrides"], "bundle_root": str(root)}
    from sparsessp_monai.experiments import benchmarking as bm

    if spec.get("cost_only"):
        return {"cost": measure_cost(spec["config_file"], overrides, device, spec["cost_warmup"], spec["cost_repeats"])}
    own = int(bm.load_config(spec["config_file"], overrides).get_parsed_content("ratio"))
    result: dict[str, Any] = {"eval": {}}
    if spec["train"]:
        result["cost"] = measure_cost(spec["config_file"], overrides, device, spec["cost_warmup"],
                                      spec["cost_repeats"])
        bm.reset_peak_memory(device)
        result["timing"] = train_bundle(spec["config_file"], overrides)
        result["timing"]["train_peak_mib"] = bm.peak_memory_mib(device)
        result["eval"][str(own)] = read_scores(root / "eval")
    configs = [spec["config_file"], spec["eval_config_file"]]
    for r in spec["eval_ratios"]:
        if str(r) not in result["eval"]:
            result["eval"][str(r)] = evaluate_bundle(configs, overrides, own, int(r), str(root / f"eval_r{r}"))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``SPEC RESULT``: run the variant described by the JSON file SPEC, write its result to RESULT."""
    from sparsessp_monai.io.publish import atomic_write_text

    spec_path, result_path = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = run_variant(spec)
    atomic_write_text(result_path, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
