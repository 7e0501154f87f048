"""
Ignite handler comparing thin-slice reconstructions with interpolation baselines, per volume
(:func:`sparsessp_monai.ct.reconstruction_scores`), written as CSV / JSON reports.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.data import MetaTensor, decollate_batch

from sparsessp_monai.ct.evaluation import METRICS, SUBSETS, reconstruction_scores
from sparsessp_monai.ct.transforms import acquired_mask, placement_from_meta, window_of
from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.io.publish import atomic_write_text, csv_text
from sparsessp_monai.transforms.finite import count_nonfinite

__all__ = ["ThinSliceComparison"]


class ThinSliceComparison:
    """
    Ignite handler for a MONAI evaluator: scores the model and the interpolation baselines of every volume, writes
    ``<prefix>_per_volume.csv`` and ``<prefix>_summary.csv`` / ``.json`` to ``save_dir`` and puts the means and the
    margins over each baseline (``<metric>_<subset>_model_minus_<baseline>``) into ``engine.state.metrics``.

    Each item of the evaluator's (decollated) batch/output must hold the model prediction ``pred_key``, the target
    ``label_key`` and one entry per baseline; the acquired slices come from the ``sparse_z_ratio`` /
    ``sparse_z_offset`` meta of ``ref_key`` and the intensity window from ``intensity_window`` of the target.

    A prediction with NaN or infinite values (a diverged model) is not scored: the epoch is refused with a
    :class:`~sparsessp_monai.engines.BundleInputError` naming the volumes, and no report is replaced.

    Args:
        save_dir: folder for the CSV/JSON reports (written atomically).
        baselines: baseline name -> data key, e.g. ``{"trilinear": "trilinear", "cubic": "cubic"}``.
        pred_key: the model prediction key.
        label_key: the ground-truth key.
        ref_key: the key carrying the acquired-slice placement meta.
        axis: the sparse spatial axis.
        prefix: file name prefix of the reports.
        window: fallback ``(lo, hi)`` when the target has no recorded window.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        baselines: Mapping[str, str] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        ref_key: str = "image",
        axis: int = 0,
        prefix: str = "thin_slice",
        window: Sequence[float] | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.baselines = dict(baselines if baselines is not None else {"trilinear": "trilinear", "cubic": "cubic"})
        self.pred_key, self.label_key, self.ref_key = pred_key, label_key, ref_key
        self.axis = int(axis)
        self.prefix = prefix
        self.window = window
        self.rows: list[dict[str, Any]] = []
        self.non_finite: list[str] = []  # volumes whose prediction is not finite
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Reset on ``EPOCH_STARTED``, score on ``ITERATION_COMPLETED``, report on ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.report)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the volumes of the previous epoch."""
        self.rows = []
        self.non_finite = []

    @staticmethod
    def _items(batch: Any, output: Any) -> list[dict[Hashable, Any]]:
        batch = batch if isinstance(batch, list) else decollate_batch(batch)
        output = output if isinstance(output, list) else decollate_batch(output)
        return [{**b, **o} for b, o in zip(batch, output)]

    def score_item(self, item: Mapping[Hashable, Any]) -> dict[str, Any]:
        """One CSV row: file name, ratio, window and every ``<method>_<metric>_<subset>`` value."""
        target = item[self.label_key]
        ratio, offset = placement_from_meta(item[self.ref_key])
        window = window_of(target, self.window)
        mask = acquired_mask(int(target.shape[self.axis + 1]), ratio, offset)
        name = target.meta.get("filename_or_obj", "") if isinstance(target, MetaTensor) else ""
        row: dict[str, Any] = {"filename": str(name), "ratio": ratio, "window_lo": window[0], "window_hi": window[1]}
        for method, key in {"model": self.pred_key, **self.baselines}.items():
            scores = reconstruction_scores(item[key], target, mask, window, self.axis)
            for subset in SUBSETS:
                for metric in METRICS:
                    row[f"{method}_{metric}_{subset}"] = scores[subset][metric]
        return row

    def update(self, engine: Engine) -> None:
        """Score every volume of the current iteration."""
        for item in self._items(engine.state.batch, engine.state.output):
            if count_nonfinite(item[self.pred_key]):
                target = item.get(self.label_key)
                name = target.meta.get("filename_or_obj", "") if isinstance(target, MetaTensor) else ""
                self.non_finite.append(str(name) or f"volume {len(self.rows) + len(self.non_finite)}")
                continue
            self.rows.append(self.score_item(item))

    def summary(self) -> dict[str, float]:
        """Means over volumes of every score, and model-minus-baseline margins (dB for PSNR; for MAE negative is
        better)."""
        out: dict[str, float] = {}
        if not self.rows:
            return out
        for method in ("model", *self.baselines):
            for metric in METRICS:
                for subset in SUBSETS:
                    vals = [r[f"{method}_{metric}_{subset}"] for r in self.rows]
                    vals = [v for v in vals if not math.isnan(v)]
                    out[f"{method}_{metric}_{subset}"] = sum(vals) / len(vals) if vals else math.nan
        for base in self.baselines:
            for metric in METRICS:
                for subset in SUBSETS:
                    key = f"{metric}_{subset}_model_minus_{base}"
                    out[key] = out[f"model_{metric}_{subset}"] - out[f"{base}_{metric}_{subset}"]
        return out

    def report(self, engine: Engine | None = None) -> dict[str, float]:
        """Write the per-volume and summary reports and publish the summary in ``engine.state.metrics``.

        Under data-parallel evaluation every rank scores its own shard: the rows are gathered (rank order) first,
        so every rank holds the same summary and rank 0 alone writes the reports."""
        if idist.get_world_size() > 1:
            self.rows = [row for part in idist.all_gather(list(self.rows)) for row in part]
            self.non_finite = [name for part in idist.all_gather(list(self.non_finite)) for name in part]
        if self.non_finite:
            bad = self.non_finite
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise BundleInputError(
                f"the prediction of {len(bad)} volume(s) is not finite (NaN or infinite values): {', '.join(bad[:5])}"
                f"{more}; the model may have diverged; the reports in {str(self.save_dir)!r} are left unchanged."
            )
        summary = self.summary()
        if engine is not None:
            engine.state.metrics.update(summary)
        if not self.rows or idist.get_rank() > 0:
            return summary
        self.save_dir.mkdir(parents=True, exist_ok=True)
        _atomic_csv(self.save_dir / f"{self.prefix}_per_volume.csv", list(self.rows[0]), self.rows)
        methods = ("model", *self.baselines)
        table = [
            {"method": m, "subset": s, "volumes": len(self.rows), **{k: summary[f"{m}_{k}_{s}"] for k in METRICS}}
            for s in SUBSETS
            for m in methods
        ]
        _atomic_csv(self.save_dir / f"{self.prefix}_summary.csv", list(table[0]), table)
        atomic_write_text(self.save_dir / f"{self.prefix}_summary.json", json.dumps(summary, indent=2))
        for base in self.baselines:
            self.logger.info(
                f"PSNR model - {base}: {summary[f'psnr_missing_model_minus_{base}']:+.3f} dB on missing slices, "
                f"{summary[f'psnr_all_model_minus_{base}']:+.3f} dB on all slices ({len(self.rows)} volume(s))"
            )
        return summary


def _atomic_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, csv_text(fields, [[row.get(f, "") for f in fields] for row in rows]))
