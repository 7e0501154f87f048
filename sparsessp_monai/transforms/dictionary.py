"""Dictionary versions of the sparse-Z transforms, for MONAI ``Compose`` pipelines and bundle configs."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable

from sparsessp_monai.transforms.array import PrefixResampleZ, SubsampleZ, check_ratio

__all__ = ["PrefixResampleZd", "RandSubsampleZd", "StructureToTaskd", "SubsampleZd"]


class SubsampleZd(MapTransform):
    """Dictionary version of :class:`~sparsessp_monai.transforms.array.SubsampleZ` (fixed ratio and offset)."""

    backend = SubsampleZ.backend

    def __init__(
        self, keys: KeysCollection, ratio: int, offset: int = 0, axis: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.subsample = SubsampleZ(ratio=ratio, offset=offset, axis=axis)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.subsample(d[key])
        return d


class RandSubsampleZd(Randomizable, MapTransform):
    """
    Simulate a sparse acquisition with a random phase: keep every ``ratio``-th slice from a random offset.

    The same ratio and offset apply to every key of one sample. A random phase teaches the network that the
    acquired slices may fall anywhere relative to a training crop, as they do in a sliding window at inference.

    Args:
        keys: keys of the images to subsample (usually only the transmitted-light input).
        ratio: the acquisition ratio, or a sequence of ratios to draw from per sample (one model for several r).
        axis: the sparse spatial axis.
        random_offset: draw the offset in ``[0, ratio)``; ``False`` always keeps slice 0.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = SubsampleZ.backend

    def __init__(
        self,
        keys: KeysCollection,
        ratio: int | Sequence[int],
        axis: int = 0,
        random_offset: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        ratios = [ratio] if isinstance(ratio, (int, np.integer, float)) else list(ratio)
        if not ratios:
            raise ValueError("ratio must be a positive integer or a non-empty sequence of them.")
        self.ratios = [check_ratio(r) for r in ratios]
        self.axis = axis
        self.random_offset = random_offset
        self._ratio = self.ratios[0]
        self._offset = 0

    def randomize(self, data: Any = None) -> None:
        self._ratio = int(self.R.choice(self.ratios))
        self._offset = int(self.R.randint(self._ratio)) if self.random_offset else 0

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        subsample = SubsampleZ(ratio=self._ratio, offset=self._offset, axis=self.axis)
        for key in self.key_iterator(d):
            d[key] = subsample(d[key])
        return d


class PrefixResampleZd(MapTransform):
    """Dictionary version of :class:`~sparsessp_monai.transforms.array.PrefixResampleZ` (every mode of
    :data:`~sparsessp_monai.transforms.array.PREFIX_MODES`, ``"cubic"`` included), one config value choosing
    the network input of the microscopy and the thin-slice CT/MR bundles.

    ``ratio_key`` optionally names a data-dictionary entry holding the acquisition ratio of a genuinely sparse
    stack (for instance read from a datalist, from file metadata, or written by
    :class:`~sparsessp_monai.transforms.ResolveZRatiod`), used when the image carries no ``sparse_z`` meta; it
    takes precedence over the ``ratio`` argument.

    Args:
        keys: image keys.
        ratio_key: the entry holding a per-sample ratio (optional).
        allow_missing_keys: don't raise for missing keys.
        resample_args: the arguments of :class:`~sparsessp_monai.transforms.array.PrefixResampleZ` (``mode``,
            ``ratio``, ``target_depth``, ``offset``, ``axis``, ``z_step``, ``target_z_step``, ``min_slices``).
    """

    backend = PrefixResampleZ.backend

    def __init__(
        self,
        keys: KeysCollection,
        ratio_key: str | None = None,
        allow_missing_keys: bool = False,
        **resample_args: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        # checks every argument once (a wrong name or value fails here, not at the first sample)
        self.resample = PrefixResampleZ(**resample_args)
        # everything but the ratio, which ``ratio_key`` may override per sample
        self.kwargs = {k: v for k, v in resample_args.items() if k not in ("ratio", "z_step", "target_z_step")}
        self.ratio_key = ratio_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        resample = self.resample
        if self.ratio_key is not None and d.get(self.ratio_key) is not None:
            resample = PrefixResampleZ(ratio=int(d[self.ratio_key]), **self.kwargs)
        for key in self.key_iterator(d):
            d[key] = resample(d[key])
        return d


SubsampleZD = SubsampleZDict = SubsampleZd
RandSubsampleZD = RandSubsampleZDict = RandSubsampleZd
PrefixResampleZD = PrefixResampleZDict = PrefixResampleZd


class StructureToTaskd(MapTransform):
    """
    Turn a structure name into the task id the network is conditioned on: ``d[task_key] = structures.index(name)``.

    The id always follows the model's ``structures`` list, whatever ids a datalist may carry, so one model and one
    table of names stay consistent.

    Args:
        structures: structure names, in task-id order.
        keys: the key holding the structure name.
        task_key: the key to write the task id to.

    Raises:
        ValueError: unknown structure name (the message lists the known ones).
    """

    def __init__(self, structures: Sequence[str], keys: KeysCollection = "structure", task_key: str = "task") -> None:
        super().__init__(keys)
        self.structures = [str(s) for s in structures]
        if not self.structures or len(set(self.structures)) != len(self.structures):
            raise ValueError(f"structures must be a non-empty list of unique names, got {self.structures}.")
        self.task_key = task_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            name = str(d[key])
            if name not in self.structures:
                raise ValueError(f"unknown structure name {name!r}; this model knows {self.structures}.")
            d[self.task_key] = self.structures.index(name)
        return d
