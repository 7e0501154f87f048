"""
Ignite handlers for evaluating one model over many structures.

:class:`ImageR2` and :class:`ImagePearson` are metric handlers in the style of MONAI's
:class:`~monai.handlers.MeanSquaredError` (use that one and :class:`~monai.handlers.MeanAbsoluteError` for MSE and
MAE). :class:`PerStructureMetricsSaver` splits the per-image values those handlers save (``save_details=True``) by
structure, puts the per-structure means into ``engine.state.metrics`` and writes CSV reports.

Bundle evaluator example::

    "key_val_metric": {
        "val_r2": {
            "_target_": "sparsessp_monai.handlers.ImageR2",
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            "save_details": true
        }
    },
    "additional_metrics": {
        "val_pearson": {
            "_target_": "sparsessp_monai.handlers.ImagePearson",
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            "save_details": true
        }
    },
    "val_handlers": [
        {"_target_": "sparsessp_monai.handlers.PerStructureMetricsSaver", "structures": "@structures",
         "save_dir": "@output_dir"},
        {"_target_": "StatsHandler", "iteration_log": false}
    ]
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.utils import ImageMetaKey as Key
from monai.utils import PostFix, evenly_divisible_all_gather

from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.io.publish import atomic_write_text, csv_text

__all__ = ["PerStructureMetricsSaver"]

# summary rows of metrics_per_structure.csv; no structure may carry these names
ALL_STRUCTURES = "all"
ALL_IMAGES = "all_images"


def _task_ids(value: Any, task_key: str) -> list[int]:
    """Task ids of a (possibly batched) ``task`` entry: a tensor, array, number or sequence of numbers."""
    try:
        ids = torch.as_tensor(value).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"batch['{task_key}'] must hold integer task ids, got {type(value).__name__}.") from e
    if ids.is_floating_point() and not bool((ids == ids.round()).all()):
        raise TypeError(f"batch['{task_key}'] must hold integer task ids, got {ids.tolist()}.")
    return [int(i) for i in ids.tolist()]


class PerStructureMetricsSaver:
    """
    Ignite handler that reports the per-image metric details of an evaluator per structure.

    For every image of every iteration it records the task id (``batch[task_key]``) and the file name (the
    ``filename_or_obj`` meta of ``batch[image_key]``; ``""`` without meta). At ``EPOCH_COMPLETED`` it reads the
    per-image values that metric handlers saved with ``save_details=True`` (``engine.state.metric_details``, a
    ``(N_images, C)`` tensor per metric, averaged over channels here), and

    - puts the mean of each metric per structure into ``engine.state.metrics`` as ``f"{metric}/{structure}"``
      (e.g. ``"val_r2/dna"``), plus the mean over structures as ``f"{metric}/all"``, so ``StatsHandler`` and
      ``TensorBoardStatsHandler`` log them;
    - keeps them in :attr:`per_structure` and the per-image rows in :attr:`per_image`;
    - on rank 0, logs a table and, when ``save_dir`` is set, writes ``metrics_per_image.csv`` (filename, structure,
      task, one column per metric) and ``metrics_per_structure.csv`` (structure, n_images, one mean per metric),
      each written atomically. The latter ends with an ``all`` row, the mean over structures (macro average, as
      the paper averages per structure), and an ``all_images`` row, the mean over images.

    Means skip NaN (undefined) values, like MONAI's ``not-nan`` reductions; ``n_images`` counts every image.
    Only structures present in the epoch are reported. An image whose prediction (``engine.state.output``'s
    ``pred_key``) holds NaN or infinite values, or whose metric is infinite, is not an undefined metric but a broken
    model: the epoch is then refused with a :class:`~sparsessp_monai.engines.BundleInputError` naming the images,
    before any metric is published or a report replaced.

    Both batch layouts are handled: a batch-first dict (``decollate=False`` or a plain Ignite engine) and the list
    of per-image dicts a MONAI workflow leaves in ``engine.state.batch`` with ``decollate=True``.

    In distributed evaluation (``ignite.distributed`` world size > 1) task ids and file names are gathered across
    ranks in the order MONAI gathers the metric details (rank after rank), every rank gets the same
    ``engine.state.metrics`` and only rank 0 logs and writes files. A ``DistributedSampler`` that pads the data to
    an even split duplicates some images in the metric details; they are reported as they are.

    Note:
        Attach it after the metrics and *before* ``StatsHandler``/``TensorBoardStatsHandler``: Ignite runs
        ``EPOCH_COMPLETED`` handlers in attachment order, and the metrics must be computed before this handler
        reads them, and this handler must run before the loggers read ``engine.state.metrics``. A MONAI workflow
        attaches its ``key_val_metric``/``additional_metrics`` before its handlers, so list this handler first in
        ``val_handlers``.

    Args:
        structures: structure names in task-id order (task id ``i`` is ``structures[i]``). An id outside the list
            is reported as ``"task_<id>"``.
        save_dir: folder for the CSV reports (created if needed); None writes no files.
        metric_names: names of the metrics (as attached to the engine) to report; default: all metrics in
            ``engine.state.metric_details``.
        task_key: batch key of the task id.
        image_key: batch key of the image whose ``filename_or_obj`` meta names the row.
        pred_key: output key of the prediction checked for finiteness (not checked where absent).
        name: name of the ``logging`` logger for the summary table.
        log_level: level of the summary table log record.

    Raises:
        ValueError: empty or duplicated ``structures``, or a structure named ``"all"``/``"all_images"``.
    """

    def __init__(
        self,
        structures: Sequence[str],
        save_dir: str | None = None,
        metric_names: Sequence[str] | None = None,
        task_key: str = "task",
        image_key: str = "image",
        pred_key: str = "pred",
        name: str = "PerStructureMetricsSaver",
        log_level: int = logging.INFO,
    ) -> None:
        self.structures = [str(s) for s in structures]
        if not self.structures:
            raise ValueError("structures must name at least one structure.")
        if len(set(self.structures)) != len(self.structures):
            raise ValueError(f"structures must be unique, got {self.structures}.")
        reserved = {ALL_STRUCTURES, ALL_IMAGES}.intersection(self.structures)
        if reserved:
            raise ValueError(f"structure names {sorted(reserved)} are reserved for the summary rows.")
        self.save_dir = save_dir
        self.metric_names = None if metric_names is None else [str(m) for m in metric_names]
        self.task_key = task_key
        self.image_key = image_key
        self.pred_key = pred_key
        self.logger = logging.getLogger(name)
        self.log_level = log_level
        self._tasks: list[int] = []
        self._filenames: list[str] = []
        self._finite: list[bool] = []
        self.per_image: list[dict[str, Any]] = []
        self.per_structure: dict[str, dict[str, float]] = {}

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: Ignite Engine, usually an evaluator whose metrics save their details.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, _engine: Engine) -> None:
        """Reset the per-image records at the start of every evaluation run."""
        self._tasks = []
        self._filenames = []
        self._finite = []

    def structure_name(self, task: int) -> str:
        """Structure name of a task id (``"task_<id>"`` for an id outside ``structures``)."""
        return self.structures[task] if 0 <= task < len(self.structures) else f"task_{task}"

    def _filenames_of(self, data: Mapping, n: int) -> list[str]:
        """File names of the ``n`` images of one batch-first dict or one per-image dict; ``""`` where unknown."""
        image = data.get(self.image_key)
        # MetaTensor meta first; a `<image_key>_meta_dict` entry for pipelines that still carry meta separately
        meta = image.meta if isinstance(image, MetaTensor) else data.get(PostFix.meta(self.image_key))
        names = meta.get(Key.FILENAME_OR_OBJ) if isinstance(meta, Mapping) else None
        if names is None:
            return [""] * n
        if isinstance(names, (list, tuple)):
            # a collated batch carries one name per image; anything else cannot be matched to the images
            return [f"{s}" for s in names] if len(names) == n else [""] * n
        return [f"{names}"] * n

    def _predictions_finite(self, output: Any, n: int) -> list[bool]:
        """Per image of one iteration: whether its prediction is finite (``True`` where there is none)."""
        if isinstance(output, Mapping):
            pred = output.get(self.pred_key)
            if isinstance(pred, torch.Tensor) and pred.ndim > 0 and pred.shape[0] == n:  # batch first
                return torch.isfinite(pred.reshape(n, -1)).all(dim=1).tolist()
            preds = [pred]
        elif isinstance(output, (list, tuple)):
            preds = [o.get(self.pred_key) if isinstance(o, Mapping) else None for o in output]
        else:
            preds = []
        flags = [bool(torch.isfinite(p).all()) if isinstance(p, torch.Tensor) else True for p in preds]
        return flags if len(flags) == n else [all(flags)] * n

    def _record(self, engine: Engine) -> None:
        """Record the task ids and file names of the images of the current iteration."""
        batch = engine.state.batch
        if isinstance(batch, Mapping):
            items: Sequence[Mapping] = [batch]
        elif isinstance(batch, (list, tuple)) and all(isinstance(b, Mapping) for b in batch):
            items = batch  # decollated by a MONAI workflow: one dict per image
        else:
            raise TypeError(
                f"{type(self).__name__} needs dict batches (or a list of per-image dicts), got {type(batch).__name__}."
            )
        recorded = len(self._tasks)
        for item in items:
            if self.task_key not in item:
                raise KeyError(f"batch has no '{self.task_key}' entry with the task id; set task_key.")
            tasks = _task_ids(item[self.task_key], self.task_key)
            image = item.get(self.image_key)
            if isinstance(image, torch.Tensor) and isinstance(batch, Mapping) and image.shape[0] != len(tasks):
                raise ValueError(
                    f"batch['{self.task_key}'] has {len(tasks)} task ids for {image.shape[0]} images "
                    f"in batch['{self.image_key}']."
                )
            self._tasks.extend(tasks)
            self._filenames.extend(self._filenames_of(item, len(tasks)))
        self._finite.extend(self._predictions_finite(engine.state.output, len(self._tasks) - recorded))

    def _metric_values(self, engine: Engine, n: int) -> dict[str, torch.Tensor]:
        """Per-image value ``(n,)`` of every reported metric, averaged over channels, in float64 on the CPU."""
        details = getattr(engine.state, "metric_details", None) or {}
        names = list(details) if self.metric_names is None else self.metric_names
        values: dict[str, torch.Tensor] = {}
        for name in names:
            if name not in details:
                warnings.warn(
                    f"{type(self).__name__}: no per-image details for metric '{name}' (attach it with "
                    "save_details=True, before this handler); skipped.",
                    stacklevel=2,
                )
                continue
            detail = details[name]
            if not isinstance(detail, torch.Tensor) or detail.ndim == 0:
                warnings.warn(f"{type(self).__name__}: details of '{name}' are not per-image; skipped.", stacklevel=2)
                continue
            v = detail.detach().to(device="cpu", dtype=torch.float64)
            if v.shape[0] != n:
                # the metric did not see the same images as this handler (e.g. attached to another engine)
                warnings.warn(
                    f"{type(self).__name__}: metric '{name}' has {v.shape[0]} per-image values for {n} recorded "
                    "images; skipped.",
                    stacklevel=2,
                )
                continue
            # MONAI stores (N, C): average the channels, skipping NaN channels as its not-nan reductions do
            values[name] = v.reshape(n, -1).nanmean(dim=1) if v.ndim > 1 else v
        return values

    def __call__(self, engine: Engine) -> None:
        """
        Args:
            engine: Ignite Engine, usually an evaluator whose metrics save their details.
        """
        tasks, filenames, finite = self._tasks, self._filenames, self._finite
        # every rank must enter the collectives, so gather before any early return
        if idist.get_world_size() > 1:
            tasks = evenly_divisible_all_gather(torch.as_tensor(tasks, dtype=torch.long), concat=True).tolist()
            finite = evenly_divisible_all_gather(torch.as_tensor(finite, dtype=torch.long), concat=True).tolist()
            # one list per rank, in rank order: the order monai.metrics.Cumulative gathers metric buffers in
            filenames = [name for part in idist.all_gather(list(filenames)) for name in part]
        n = len(tasks)
        values = self._metric_values(engine, n)
        self._refuse_non_finite(filenames, finite, values)
        structure_of_image = [self.structure_name(t) for t in tasks]

        # report order: task-id order, then ids outside `structures`
        seen = set(structure_of_image)
        order = [s for s in self.structures if s in seen]
        order += sorted(seen.difference(self.structures))

        self.per_image = [
            {"filename": f, "structure": s, "task": t, **{m: float(v[i]) for m, v in values.items()}}
            for i, (f, s, t) in enumerate(zip(filenames, structure_of_image, tasks))
        ]
        self.per_structure = {}
        for structure in order:
            mask = torch.tensor([s == structure for s in structure_of_image], dtype=torch.bool)
            row: dict[str, float] = {"n_images": int(mask.sum())}
            row.update({m: float(v[mask].nanmean()) for m, v in values.items()})
            self.per_structure[structure] = row
        if order:
            # macro average: each structure weighs the same whatever its number of images
            macro = {m: torch.tensor([self.per_structure[s][m] for s in order], dtype=torch.float64) for m in values}
            self.per_structure[ALL_STRUCTURES] = {"n_images": n, **{m: float(v.nanmean()) for m, v in macro.items()}}
            self.per_structure[ALL_IMAGES] = {"n_images": n, **{m: float(v.nanmean()) for m, v in values.items()}}

        for structure, row in self.per_structure.items():
            if structure == ALL_IMAGES:
                continue  # with a "mean" reduction this equals the metric itself, already in engine.state.metrics
            for m in values:
                engine.state.metrics[f"{m}/{structure}"] = row[m]

        if idist.get_rank() == 0:
            self._log(list(values))
            if self.save_dir is not None:
                self._save(list(values))

    def _refuse_non_finite(self, filenames: list[str], finite: list[bool], values: dict[str, torch.Tensor]) -> None:
        """Raise, naming them, when images have a non-finite prediction or an infinite metric (same on all ranks:
        the inputs were gathered)."""
        bad = [
            filenames[i] if i < len(filenames) and filenames[i] else f"image {i}"
            for i in range(len(finite))
            if not finite[i] or any(math.isinf(float(v[i])) for v in values.values())
        ]
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            kept = f"; the reports in {self.save_dir!r} are left unchanged" if self.save_dir is not None else ""
            raise BundleInputError(
                f"metrics of {len(bad)} image(s) are not finite (NaN or infinite prediction): "
                f"{', '.join(bad[:5])}{more}; the model may have diverged{kept}."
            )

    def _save(self, metric_names: list[str]) -> None:
        """Write the per-image and per-structure CSV reports into ``save_dir``."""
        os.makedirs(self.save_dir, exist_ok=True)  # type: ignore[arg-type]
        per_image_cols = ["filename", "structure", "task", *metric_names]
        # atomic, so readers never see half a report
        atomic_write_text(
            os.path.join(self.save_dir, "metrics_per_image.csv"),  # type: ignore[arg-type]
            csv_text(per_image_cols, [[r[c] for c in per_image_cols] for r in self.per_image]),
        )
        atomic_write_text(
            os.path.join(self.save_dir, "metrics_per_structure.csv"),  # type: ignore[arg-type]
            csv_text(
                ["structure", "n_images", *metric_names],
                [[s, r["n_images"], *(r[m] for m in metric_names)] for s, r in self.per_structure.items()],
            ),
        )

    def _log(self, metric_names: list[str]) -> None:
        """Log the per-structure means as a small fixed-width table."""
        if not self.per_structure:
            self.logger.log(self.log_level, "no images were evaluated, nothing to report per structure.")
            return
        width = max(len("structure"), *(len(s) for s in self.per_structure))
        cols = [max(len(m), 10) for m in metric_names]
        lines = [f"{'structure':<{width}}  {'n':>5}  " + "  ".join(f"{m:>{w}}" for m, w in zip(metric_names, cols))]
        for structure, row in self.per_structure.items():
            cells = "  ".join(f"{row[m]:>{w}.4f}" for m, w in zip(metric_names, cols))
            lines.append(f"{structure:<{width}}  {row['n_images']:>5d}  {cells}")
        self.logger.log(self.log_level, "metrics per structure:\n%s", "\n".join(lines))
