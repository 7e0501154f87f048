"""Dictionary versions of the sparse-Z transforms, for MONAI ``Compose`` pipelines and bundle configs."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable

from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.transforms.array import PrefixResampleZ, SubsampleZ, check_ratio, image_name

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
            raise BundleInputError("ratio must be a positive integer or a non-empty sequence of them.")
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
            ``ratio``, ``target_depth``, ``offset``, ``axis``, ``z_step``, ``target_z_step``, ``min_slices``,
            ``max_ratio``).
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
    table of names stay consistent. A datalist id that is not a whole number (``1.5``, ``"two"``) is refused rather
    than replaced: it shows the datalist is not what it is meant to be (the network would truncate it).

    Args:
        structures: structure names, in task-id order.
        keys: the key holding the structure name.
        task_key: the key to write the task id to.
        file_key: the key naming the item's file, for error messages.

    Raises:
        BundleInputError: naming the item's file: no structure name, an unknown one (the message lists the known
            ones), or a datalist task id that is not a whole number.
    """

    def __init__(
        self,
        structures: Sequence[str],
        keys: KeysCollection = "structure",
        task_key: str = "task",
        file_key: str = "image",
    ) -> None:
        super().__init__(keys)
        self.structures = [str(s) for s in structures]
        if not self.structures or len(set(self.structures)) != len(self.structures):
            raise BundleInputError(f"structures must be a non-empty list of unique names, got {self.structures}.")
        self.task_key = task_key
        self.file_key = file_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        item = image_name(d.get(self.file_key), d.get(self.file_key, "datalist item"))
        for key in self.keys:
            if key not in d:
                raise BundleInputError(f"{item}: the datalist item has no {key!r} (the structure to predict).")
            name = str(d[key])
            if name not in self.structures:
                raise BundleInputError(f"{item}: unknown structure name {name!r}; this model knows {self.structures}.")
            given = d.get(self.task_key)
            if given is not None and not _whole_number(given):
                raise BundleInputError(
                    f"{item}: task id {given!r} in the datalist is not a whole number; give the structure name "
                    f"(task ids follow {self.structures})."
                )
            d[self.task_key] = self.structures.index(name)
        return d


def _whole_number(value: Any) -> bool:
    """Whether a datalist value is an integer (a bool, a non-integral float or a string is not)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, (float, np.floating)):
        return float(value).is_integer()
    return hasattr(value, "numel") and value.numel() == 1 and not value.is_floating_point()
