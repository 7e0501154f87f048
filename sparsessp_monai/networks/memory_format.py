"""Memory layout of a network's 3D convolution weights."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["channels_last_3d"]


def channels_last_3d(module: nn.Module) -> nn.Module:
    """
    Store every 5-D parameter of ``module`` (the weights of its 3D convolutions) channels-last
    (``torch.channels_last_3d``), in place, and return ``module``.

    A 3D convolution's output follows its weight's layout, so the activations of a 3D network become channels-last
    too; oneDNN's 3D kernels are then much faster for narrow layers (measured on CPU: a full training step of the
    default 3D UNet, widths 8..64, about 1.3-1.6x faster). ``Module.to(memory_format=...)`` cannot be used
    here: it fails on a network that also has 2D convolutions or 1-D parameters. Values, ``state_dict`` keys and
    shapes are unchanged; ``load_state_dict`` keeps the layout.
    """
    for param in module.parameters():
        if param.ndim == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return module
