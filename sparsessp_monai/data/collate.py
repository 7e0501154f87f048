"""
Collation of a batch of one volume without a copy.

MONAI's ``list_data_collate`` stacks every tensor with ``torch.stack``, which copies it even for a batch of one:
for a 128 x 1024 x 1024 float32 input that is another 512 MiB at the moment the loader hands the batch over, and
with freed memory kept in the process (:func:`sparsessp_monai.engines.keep_freed_memory`) it stays in the resident
size. Inference loaders (``batch_size`` 1, one whole volume per item) lose nothing by adding the batch axis as a view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor, list_data_collate
from monai.utils import TraceKeys
from torch.utils.data._utils.collate import default_collate

__all__ = ["view_collate"]


def view_collate(batch: Sequence[Any]) -> Any:
    """
    ``list_data_collate``, except that a batch of one dictionary gets its tensors as ``(1, ...)`` views of the
    item's tensors instead of stacked copies. MetaTensors get the batch meta data ``list_data_collate`` gives them
    (collated meta dict, ``applied_operations`` as a list of one, ``is_batch``), so ``decollate_batch`` and
    ``Invertd`` work as usual. Anything else (batches of several items, list items from multi-sample transforms,
    non-tensor values) goes through ``list_data_collate``.

    The batch shares memory with the item: use it where nothing writes into the batch in place (inference), not
    with a cache whose items a training step could change.
    """
    if len(batch) != 1 or not isinstance(batch[0], Mapping):
        return list_data_collate(batch)
    item = batch[0]
    tensors = {k for k, v in item.items() if isinstance(v, torch.Tensor)}
    rest = list_data_collate([{k: v for k, v in item.items() if k not in tensors}]) if len(tensors) < len(item) else {}
    return {k: _batch_of_one(item[k]) if k in tensors else rest[k] for k in item}


def _batch_of_one(t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, MetaTensor):
        return t.unsqueeze(0)
    out = MetaTensor(t.as_tensor().unsqueeze(0))
    # the batch meta data of MONAI's collate_meta_tensor_fn for one item
    out.meta = default_collate([t.meta or TraceKeys.NONE])
    out.applied_operations = [t.applied_operations or TraceKeys.NONE]
    out.is_batch = True
    out.spatial_ndim = min(getattr(t, "spatial_ndim", 3), max(out.ndim - 1, 1))
    return out
