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

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 1, D, H, W)`` thin-grid input -> ``(B, out_channels, D, H, W)``."""
        y = self.net(x, task)
        if not self.residual:
            return y
        # the sum in the input's precision: under bf16 autocast only the (small) correction is rounded to bf16
        return x + y.to(x.dtype)
