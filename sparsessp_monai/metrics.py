"""
Per-image regression metrics for predicted fluorescence volumes.

Every metric is computed per image over all of its voxels and channels and returns a ``(B, 1)`` tensor, like
MONAI's :class:`~monai.metrics.MSEMetric` and :class:`~monai.metrics.MAEMetric` (which are reused as they are for
MSE and MAE). The MONAI metric classes accumulate these per-image values across iterations; the plain function
:func:`regression_scores` returns the same numbers for scripts.

R2 and the Pearson correlation are computed in float64. A volume has ~5M voxels and fluorescence targets often sit
on a large offset (e.g. camera baseline ``1000 + signal``): float32 centred sums of squares over such data cancel
catastrophically and would make R2/Pearson wrong in the third or fourth digit.

Undefined values are NaN, never an error: R2 of a constant target (zero variance) and the correlation with a
constant prediction or target are NaN, and MONAI's ``not-nan`` reductions (``"mean"``, ``"mean_batch"``, ...) skip
them, so an empty or saturated image does not poison the epoch average.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.config import TensorOrList
from monai.metrics import MAEMetric, MSEMetric
from monai.metrics.regression import RegressionMetric
from monai.utils import MetricReduction, convert_to_tensor

__all__ = [
    "PearsonMetric",
    "PerImageRegressionMetric",
    "R2Metric",
    "compute_pearson",
    "compute_r2",
    "regression_scores",
]


def _flatten_float64(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(B, N)`` float64 plain tensors (no MetaTensor bookkeeping) of a batch-first pair."""
    pred = convert_to_tensor(y_pred, dtype=torch.float64, track_meta=False).flatten(start_dim=1)
    target = convert_to_tensor(y, dtype=torch.float64, track_meta=False).flatten(start_dim=1)
    return pred, target


def _nan_where_zero(x: torch.Tensor) -> torch.Tensor:
    """Replace exact zeros by NaN so that a division by it yields NaN instead of +-inf."""
    return torch.where(x > 0, x, torch.full_like(x, float("nan")))


def compute_r2(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""
    Coefficient of determination of every image of a batch, over all its channels and voxels.

    .. math::
        R^2 = 1 - \frac{\sum_i (y_i - \hat{y}_i)^2}{\sum_i (y_i - \bar{y})^2}

    Args:
        y_pred: batch-first prediction ``(B, C, ...)``.
        y: batch-first target of the same shape.

    Returns:
        float64 tensor ``(B, 1)``. NaN for an image whose target is constant (zero variance), where R2 is
        undefined (a perfect prediction of a constant target included).
    """
    pred, target = _flatten_float64(y_pred, y)
    ss_res = (target - pred).square_().sum(dim=1, keepdim=True)
    # two-pass (centre, then square) in float64: exact enough even with a large intensity offset
    ss_tot = (target - target.mean(dim=1, keepdim=True)).square_().sum(dim=1, keepdim=True)
    return 1.0 - ss_res / _nan_where_zero(ss_tot)


def compute_pearson(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """
    Pearson correlation between the predicted and target voxels of every image of a batch.

    Args:
        y_pred: batch-first prediction ``(B, C, ...)``.
        y: batch-first target of the same shape.

    Returns:
        float64 tensor ``(B, 1)`` in ``[-1, 1]``. NaN for an image whose prediction or target is constant, where
        the correlation is undefined.
    """
    pred, target = _flatten_float64(y_pred, y)
    pred = pred - pred.mean(dim=1, keepdim=True)
    target = target - target.mean(dim=1, keepdim=True)
    cov = (pred * target).sum(dim=1, keepdim=True)
    norm = torch.sqrt(pred.square().sum(dim=1, keepdim=True) * target.square().sum(dim=1, keepdim=True))
    # rounding can push |r| a hair above 1 for (anti-)identical images; NaN stays NaN through clamp
    return (cov / _nan_where_zero(norm)).clamp(-1.0, 1.0)


class PerImageRegressionMetric(RegressionMetric):
    """
    Base of the per-image regression metrics: ``score(y_pred, y)`` gives one value per image (shape ``(B, 1)``).

    Input `y_pred` is compared with ground truth `y`, both real-valued, as a batch-first Tensor ``(B, C, ...)`` or a
    list of channel-first Tensors; each image's value is computed in float64 over all its voxels and channels. NaN
    values (undefined scores) are skipped by the ``not-nan`` reductions (``get_not_nans=True`` reports how many
    images counted).

    Example of the typical execution steps of this metric class follows :py:class:`monai.metrics.metric.Cumulative`.

    Args:
        reduction: define the mode to reduce metrics, will only execute reduction on `not-nan` values,
            available reduction modes: {``"none"``, ``"mean"``, ``"sum"``, ``"mean_batch"``, ``"sum_batch"``,
            ``"mean_channel"``, ``"sum_channel"``}, default to ``"mean"``. if "none", will not do reduction.
        get_not_nans: whether to return the `not_nans` count, if True, aggregate() returns (metric, not_nans).
    """

    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)

    def _compute_metric(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return type(self).score(y_pred, y)


class R2Metric(PerImageRegressionMetric):
    """Per-image coefficient of determination (R2), see :func:`compute_r2`; an image with a constant target gives
    NaN. Arguments as in :class:`PerImageRegressionMetric`."""

    score = staticmethod(compute_r2)


class PearsonMetric(PerImageRegressionMetric):
    """Per-image Pearson correlation between predicted and target voxels, see :func:`compute_pearson`; a constant
    prediction or target gives NaN. Arguments as in :class:`PerImageRegressionMetric`."""

    score = staticmethod(compute_pearson)


def regression_scores(pred: TensorOrList, target: TensorOrList) -> dict[str, torch.Tensor]:
    """
    Per-image ``mse``, ``mae``, ``r2`` and ``pearson`` of a batch, for scripts outside an Ignite engine.

    The values come from the very metric classes the evaluation handlers use (MONAI's
    :class:`~monai.metrics.MSEMetric` / :class:`~monai.metrics.MAEMetric`, :class:`R2Metric`,
    :class:`PearsonMetric`), so a script and a bundle evaluator report identical numbers.

    Args:
        pred: batch-first prediction ``(B, C, D, H, W)`` or a list of channel-first volumes.
        target: target of the same layout and shape.

    Returns:
        dict name -> float64 tensor of shape ``(B,)`` (NaN where a score is undefined, see the metric classes).

    Raises:
        ValueError: ``pred`` and ``target`` shapes differ, or there is no dimension besides the batch.

    Example::

        scores = regression_scores(pred, target)
        print(scores["r2"].mean().item())
    """
    metrics = {"mse": MSEMetric(), "mae": MAEMetric(), "r2": R2Metric(), "pearson": PearsonMetric()}
    # a fresh metric per call: its cumulative buffer is thrown away with it, nothing leaks between calls
    # plain tensors out: MONAI's MSE/MAE keep MetaTensor inputs' type, whose meta means nothing for a score
    return {
        name: convert_to_tensor(metric(pred, target), dtype=torch.float64, track_meta=False).reshape(-1)
        for name, metric in metrics.items()
    }
