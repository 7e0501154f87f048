"""
NaN / Inf counting without volume-sized temporaries.

``(~torch.isfinite(t)).sum()`` on a 128 x 1024 x 1024 float32 volume (512 MiB) allocates two bool volumes and an
int64 one for the sum: about 1.5 GiB on top of the volume, and with freed memory kept in the process (see
:func:`sparsessp_monai.engines.keep_freed_memory`) that becomes the process's resident size. Counting in blocks of a
few MiB gives the same number with temporaries of one block.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["count_nonfinite"]

# voxels per block: 4 Mi voxels make a 4 MiB bool temporary, large enough that the loop costs nothing
_BLOCK = 1 << 22


def count_nonfinite(values: Any, block: int = _BLOCK) -> int:
    """Number of NaN and infinite entries of ``values`` (a tensor, MetaTensor or array; 0 for integer data).

    The count goes over blocks of at most ``block`` entries along the leading axes, so no temporary is larger than
    one block whatever the layout (a non-contiguous view is not copied).
    """
    t = torch.as_tensor(values)
    if hasattr(t, "as_tensor"):  # a MetaTensor: its __torch_function__ would copy meta for every block
        t = t.as_tensor()
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return 0
    return _count(t, max(int(block), 1))


def _count(t: torch.Tensor, block: int) -> int:
    if t.numel() <= block:
        return int(torch.count_nonzero(~torch.isfinite(t)))
    if t.ndim == 1:
        return sum(_count(part, block) for part in t.split(block))
    rows = block // max(t[0].numel(), 1)
    if rows >= 2:
        return sum(_count(part, block) for part in t.split(rows))
    return sum(_count(row, block) for row in t.unbind(0))
