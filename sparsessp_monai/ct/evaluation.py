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

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.metrics import MAEMetric, PSNRMetric, SSIMMetric
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["METRICS", "SUBSETS", "reconstruction_scores"]

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
