"""
Metric handlers in the style of MONAI's :class:`~monai.handlers.MeanSquaredError`: per-image R2 and Pearson r
(use MONAI's :class:`~monai.handlers.MeanSquaredError` and :class:`~monai.handlers.MeanAbsoluteError` for MSE and
MAE). With ``save_details=True`` they keep every image's value for :class:`PerStructureMetricsSaver`.
"""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.utils import MetricReduction

from sparsessp_monai.metrics import PearsonMetric, PerImageRegressionMetric, R2Metric

__all__ = ["ImagePearson", "ImageR2", "PerImageMetricHandler"]


class PerImageMetricHandler(IgniteMetricHandler):
    """
    Base of the per-image metric handlers: computes ``metric_class`` per image and collects its average over images
    and iterations.

    Args:
        reduction: define the mode to reduce metrics, will only execute reduction on `not-nan` values,
            available reduction modes: {``"none"``, ``"mean"``, ``"sum"``, ``"mean_batch"``, ``"sum_batch"``,
            ``"mean_channel"``, ``"sum_channel"``}, default to ``"mean"``. if "none", will not do reduction.
            Images with an undefined (NaN) score are skipped.
        output_transform: callable to extract `y_pred` and `y` from `ignite.engine.state.output` then
            construct `(y_pred, y)` pair, where `y_pred` and `y` can be `batch-first` Tensors or
            lists of `channel-first` Tensors. the form of `(y_pred, y)` is required by the `update()`.
            `engine.state` and `output_transform` inherit from the ignite concept:
            https://pytorch.org/ignite/concepts.html#state, explanation and usage example are in the tutorial:
            https://github.com/Project-MONAI/tutorials/blob/master/modules/batch_output_transform.ipynb.
        save_details: whether to save the score of every image into `engine.state.metric_details` with the metric
            name as key (needed by :class:`~sparsessp_monai.handlers.PerStructureMetricsSaver`). default to True.
    """

    metric_class: type[PerImageRegressionMetric]

    def __init__(
        self,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = self.metric_class(reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class ImageR2(PerImageMetricHandler):
    """Per-image coefficient of determination (R2), :class:`~sparsessp_monai.metrics.R2Metric`; images with a
    constant target are skipped. Arguments as in :class:`PerImageMetricHandler`."""

    metric_class = R2Metric


class ImagePearson(PerImageMetricHandler):
    """Per-image Pearson correlation of prediction and target voxels, :class:`~sparsessp_monai.metrics.PearsonMetric`;
    images with a constant prediction or target are skipped. Arguments as in :class:`PerImageMetricHandler`."""

    metric_class = PearsonMetric
