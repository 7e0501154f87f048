"""
Thin-slice reconstruction metrics: the model against trilinear and cubic-spline interpolation of the same sparse
slices, per volume, on the slices that were not acquired and on all slices.

Metrics (MONAI's metric classes on the ``[0, 1]``-windowed volumes, every method clipped to ``[0, 1]``, the known
range of the target):

- ``psnr``: :class:`~monai.metrics.PSNRMetric` with ``max_val = 1`` (the window width), over the voxels of the
  selected slices;
- ``ssim``: :class:`~monai.metrics.SSIMMetric` in 2D (``data_range = 1``, 7x7 Gaussian window) on every selected
  axial slice, averaged over the slices; slice-wise so that "only the missing slices" is well defined;
- ``mae``: :class:`~monai.metrics.MAEMetric` times the window width: mean absolute error in HU for CT (in the
  volume's own intensity unit for MR), inside the window (values outside it are clipped).

Subsets: ``missing`` = the thin slices that were not acquired (where the methods differ; interpolation reproduces
the acquired ones exactly) and ``all`` = every thin slice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.metrics import MAEMetric, PSNRMetric, SSIMMetric
from monai.utils import IgniteInfo, min_version, optional_import

from sparsessp_monai.ct.transforms import _placement_from_meta, _window_of, acquired_mask
from sparsessp_monai.fileio import atomic_write_text, csv_text

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["METRICS", "SUBSETS", "ThinSliceComparison", "reconstruction_scores"]

METRICS = ("psnr", "ssim", "mae")
SUBSETS = ("missing", "all")


def _plain(x: Any) -> torch.Tensor:
    t = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
    return t.detach().to("cpu", torch.float32)


def reconstruction_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    acquired: torch.Tensor,
    window: Sequence[float] = (0.0, 1.0),
    axis: int = 0,
) -> dict[str, dict[str, float]]:
    """PSNR, SSIM and MAE of one ``(C, D, H, W)`` reconstruction in ``[0, 1]`` units, per slice subset.

    Args:
        pred: reconstruction, windowed to ``[0, 1]`` (clipped here).
        target: ground-truth thin-slice volume, windowed to ``[0, 1]``.
        acquired: boolean ``(D,)`` mask of the acquired slices along ``axis``.
        window: ``(lo, hi)`` of the intensity window; MAE is reported in its unit (HU for CT).
        axis: the sparse spatial axis.

    Returns:
        ``{"missing": {"psnr", "ssim", "mae"}, "all": {...}}``; the ``missing`` values are NaN when every slice
        was acquired.

    Raises:
        ValueError: shapes differ, or the mask does not match the depth.
    """
    pred, target = _plain(pred).clamp(0.0, 1.0), _plain(target)
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (C, D, H, W).")
    dim = axis + 1
    if acquired.numel() != pred.shape[dim]:
        raise ValueError(f"acquired mask has {acquired.numel()} entries for a depth of {pred.shape[dim]}.")
    width = float(window[1]) - float(window[0])
    psnr, mae = PSNRMetric(max_val=1.0), MAEMetric()
    in_plane = [int(pred.shape[i + 1]) for i in range(3) if i != axis]
    win = min(7, *in_plane)
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win if win % 2 else win - 1)
    scores: dict[str, dict[str, float]] = {}
    for subset, select in (("missing", ~acquired), ("all", torch.ones_like(acquired))):
        idx = torch.nonzero(select).reshape(-1)
        if idx.numel() == 0:
            scores[subset] = dict.fromkeys(METRICS, math.nan)
            continue
        p, t = pred.index_select(dim, idx), target.index_select(dim, idx)
        # slices as a batch of 2D images for SSIM: (C, S, ...) -> (S, C, H, W)
        p2, t2 = torch.movedim(p, dim, 0), torch.movedim(t, dim, 0)
        scores[subset] = {
            "psnr": float(psnr(p[None], t[None]).reshape(-1)[0]),
            "ssim": float(ssim(p2, t2).mean()),
            "mae": float(mae(p[None], t[None]).reshape(-1)[0]) * width,
        }
    return scores


class ThinSliceComparison:
    """
    Ignite handler for a MONAI evaluator: scores the model and the interpolation baselines of every volume, writes
    ``<prefix>_per_volume.csv`` and ``<prefix>_summary.csv`` / ``.json`` to ``save_dir`` and puts the means and the
    margins over each baseline (``<metric>_<subset>_model_minus_<baseline>``) into ``engine.state.metrics``.

    Each item of the evaluator's (decollated) batch/output must hold the model prediction ``pred_key``, the target
    ``label_key`` and one entry per baseline; the acquired slices come from the ``sparse_z_ratio`` /
    ``sparse_z_offset`` meta of ``ref_key`` and the intensity window from ``intensity_window`` of the target.

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
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Reset on ``EPOCH_STARTED``, score on ``ITERATION_COMPLETED``, report on ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.report)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the volumes of the previous epoch."""
        self.rows = []

    @staticmethod
    def _items(batch: Any, output: Any) -> list[dict[Hashable, Any]]:
        batch = batch if isinstance(batch, list) else decollate_batch(batch)
        output = output if isinstance(output, list) else decollate_batch(output)
        return [{**b, **o} for b, o in zip(batch, output)]

    def score_item(self, item: Mapping[Hashable, Any]) -> dict[str, Any]:
        """One CSV row: file name, ratio, window and every ``<method>_<metric>_<subset>`` value."""
        target = item[self.label_key]
        ratio, offset = _placement_from_meta(item[self.ref_key])
        window = _window_of(target, self.window)
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
        """Write the per-volume and summary reports and publish the summary in ``engine.state.metrics``."""
        summary = self.summary()
        if engine is not None:
            engine.state.metrics.update(summary)
        if not self.rows:
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
