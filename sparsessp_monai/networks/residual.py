"""A residual wrapper around :class:`~sparsessp_monai.networks.SparseSSPNet` for thin-slice reconstruction."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparsessp_monai.networks.sparsessp_net import SparseSSPNet

__all__ = ["ResidualSparseSSP"]


class ResidualSparseSSP(nn.Module):
    """
    ``x + SparseSSPNet(x)``: the network learns the correction to the interpolated thin-slice input.

    The input of a thin-slice reconstruction (the sparse slices interpolated to the thin grid) is already close to
    the target, so predicting only the residual is an easier problem than predicting the volume. The output layer
    starts at zero, so an untrained model reproduces its input (e.g. the cubic-spline baseline) and training can
    only move away from it where the data says so.

    Args:
        residual: ``False`` makes this a plain :class:`SparseSSPNet` (same weights layout under ``net.``).
        zero_init: start the output layer at zero (only with ``residual``).
        kwargs: arguments of :class:`SparseSSPNet` (``depth``, ``features_3d``, ...).
    """

    def __init__(self, residual: bool = True, zero_init: bool = True, **kwargs: Any) -> None:
        super().__init__()
        self.net = SparseSSPNet(**kwargs)
        self.residual = bool(residual)
        if self.residual and zero_init:
            with torch.no_grad():
                for p in self.net.head.parameters():
                    p.zero_()

    def forward(
        self, x: torch.Tensor, task: torch.Tensor | None = None, acquired: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        ``(B, 1, D, H, W)`` thin-grid input -> ``(B, out_channels, D, H, W)``.

        ``acquired`` (training): a mask broadcastable to the output, 1 on the acquired slices (e.g. ``(B, 1, D, 1,
        1)`` from :class:`~sparsessp_monai.ct.AcquiredMaskd`); the output there is the input, as the evaluation's
        :class:`~sparsessp_monai.ct.KeepAcquiredSlicesd` makes it, so a loss only trains the missing slices.
        """
        y = self.net(x, task)
        if self.residual:
            # the sum in the input's precision: under bf16 autocast only the (small) correction is rounded to bf16
            y = x + y.to(x.dtype)
        if acquired is None:
            return y
        if acquired.ndim != y.ndim:
            raise ValueError(f"acquired mask of shape {tuple(acquired.shape)} for an output of shape {tuple(y.shape)}.")
        return torch.where(acquired.to(device=y.device) > 0.5, x.to(y.dtype), y)
