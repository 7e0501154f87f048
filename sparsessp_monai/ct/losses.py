"""
Training losses for thin-slice reconstruction.

The evaluation scores PSNR (an MSE), MAE and the 2D SSIM of every axial slice (:mod:`sparsessp_monai.ct.evaluation`).
An MSE-trained correction of an interpolation wins PSNR but can lose SSIM: lowering the squared error smooths
texture that SSIM's contrast and structure terms reward. :class:`SliceSSIMMSELoss` adds the same slice-wise SSIM
that the evaluation reports to the MSE, so the correction is pushed towards both.
"""

from __future__ import annotations

import torch

__all__ = ["SliceSSIMMSELoss", "slice_ssim"]


def _gaussian_band(size: int, win_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """(size, size - win_size + 1) matrix whose columns are the normalised Gaussian window at every 'valid' position:
    ``x @ band`` filters the last axis of ``x`` exactly as MONAI's SSIM does (no padding), as one GEMM."""
    dist = torch.arange((1 - win_size) / 2, (1 + win_size) / 2, 1.0, dtype=torch.float64)
    gauss = torch.exp(-((dist / sigma) ** 2) / 2)
    gauss = gauss / gauss.sum()
    band = torch.zeros(size, size - win_size + 1, dtype=torch.float64)
    for j in range(band.shape[1]):
        band[j : j + win_size, j] = gauss
    return band.to(dtype=like.dtype, device=like.device)


def slice_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    win_size: int = 7,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """
    Mean 2D SSIM of ``(..., H, W)`` images over all leading axes, with the Gaussian window, constants and 'valid'
    borders of MONAI's :class:`~monai.metrics.SSIMMetric`. The separable window is applied as two matrix products
    per statistic, which on a CPU is about 20x faster than MONAI's 2D grouped convolutions (the training step of
    :class:`SliceSSIMMSELoss` would otherwise spend more time in the loss than in the network).
    """
    height, width = pred.shape[-2:]
    if min(height, width) < win_size:
        raise ValueError(f"images of {height} x {width} are smaller than the SSIM window {win_size}.")
    rows = _gaussian_band(height, win_size, sigma, pred)
    cols = _gaussian_band(width, win_size, sigma, pred)
    stats = torch.stack([pred, target, pred * pred, target * target, pred * target])
    mu_x, mu_y, e_xx, e_yy, e_xy = rows.transpose(0, 1) @ stats @ cols
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    var_x, var_y, cov = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return (luminance * (2 * cov + c2) / (var_x + var_y + c2)).mean()


class SliceSSIMMSELoss(torch.nn.Module):
    """
    ``MSE(pred, target) + ssim_weight * (1 - SSIM)``, with SSIM computed in 2D on every slice across the depth axis
    (:func:`slice_ssim`: MONAI's Gaussian-window SSIM) and averaged, as the CT evaluation measures it.

    Args:
        ssim_weight: weight of the SSIM term; 0 gives plain MSE.
        win_size: SSIM window (odd), 7 as in the evaluation; patches must be at least this large in-plane.
        depth_axis: the depth axis among the spatial axes (0 = the first, as in the bundle's ``depth_axis``).
        data_range: intensity range of the (windowed) images.

    Shapes: ``pred`` and ``target`` are ``(B, C, D, H, W)`` (depth at ``depth_axis``); returns a scalar.
    """

    def __init__(self, ssim_weight: float = 0.01, win_size: int = 7, depth_axis: int = 0, data_range: float = 1.0):
        super().__init__()
        if ssim_weight < 0:
            raise ValueError(f"ssim_weight must be >= 0, got {ssim_weight}.")
        if depth_axis not in (0, 1, 2):
            raise ValueError(f"depth_axis must be 0, 1 or 2, got {depth_axis}.")
        self.ssim_weight = float(ssim_weight)
        self.win_size = int(win_size)
        self.depth_axis = int(depth_axis)
        self.data_range = float(data_range)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != 5 or pred.shape != target.shape:
            raise ValueError(
                f"expected two (B, C, D, H, W) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}."
            )
        pred, target = pred.float(), target.float()
        loss = torch.nn.functional.mse_loss(pred, target)
        if self.ssim_weight:
            # depth to the front: every (H, W) plane left is one slice across the depth axis
            axis = 2 + self.depth_axis
            ssim = slice_ssim(
                pred.movedim(axis, 0), target.movedim(axis, 0), win_size=self.win_size, data_range=self.data_range
            )
            loss = loss + self.ssim_weight * (1 - ssim)
        return loss
