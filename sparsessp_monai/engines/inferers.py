"""Inferers: run any MONAI inferer with the network under ``torch.autocast`` (bf16 on CPU or CUDA)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.inferers import Inferer

from sparsessp_monai.engines.bundle_utils import as_bool

__all__ = ["AutocastInferer"]


class AutocastInferer(Inferer):
    """
    Wrap a MONAI inferer so that every network call runs under ``torch.autocast`` and returns float32.

    Only the network's forward is autocast: a sliding-window inferer still stitches windows in float32, and losses
    and metrics see float32 predictions. On CPUs with AMX, bf16 autocast runs convolutions several times faster.

    Args:
        inferer: the inferer to wrap (``SimpleInferer``, ``SlidingWindowInferer``, ...).
        enabled: ``False`` makes this a pass-through, so configs can switch precision with one flag.
        dtype: the autocast dtype, ``torch.bfloat16`` by default (``"bfloat16"`` / ``"float16"`` strings work too).
    """

    def __init__(self, inferer: Inferer, enabled: bool = True, dtype: torch.dtype | str = torch.bfloat16) -> None:
        self.inferer = inferer
        self.enabled = as_bool(enabled)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)

        def autocast_forward(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            with torch.autocast(device_type=x.device.type, dtype=self.dtype):
                return network(x, *a, **k).float()

        return self.inferer(inputs, autocast_forward, *args, **kwargs)
