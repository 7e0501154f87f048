"""Acquisition ratio of a genuinely sparse stack, from the configuration or the file's z-step."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform

from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.io import known_spacing_axes
from sparsessp_monai.transforms.array import check_ratio, ratio_from_z_steps

__all__ = ["ResolveZRatiod"]


def _z_step_known(img: MetaTensor, axis: int) -> bool:
    """Whether the file recorded the spacing of ``axis`` (TiffReader's per-axis flags; other readers: always)."""
    known = known_spacing_axes(img.meta)
    if known is not None:
        return bool(known[axis])
    return img.meta.get("spacing_known") is not False


class ResolveZRatiod(MapTransform):
    """
    Work out the acquisition ratio of a genuinely sparse stack (a stack holding only the acquired slices) and store
    it under ``ratio_key``.

    The acquired z-step is the file's (from its affine, i.e. OME ``PhysicalSizeZ`` or the NIfTI header), else the
    configured ``z_step`` (for files that do not record it; the stack's affine is then given that z-step so the
    outputs carry the right voxel size). The ratio is the configured ``ratio``, else that z-step divided by
    ``target_z_step``. Every value that is known must agree with the others.

    Args:
        keys: the image key (one).
        ratio: configured ratio, or ``None`` to derive it from the z-step.
        target_z_step: z-step of the full grid (same unit as the file's spacing, micrometres for OME-TIFF).
        axis: the sparse spatial axis.
        ratio_key: where to write the ratio.
        z_step: acquired z-step to use when the file does not record one; checked against the file when it does.
        min_slices: fewest acquired slices accepted (two are needed to interpolate between).

    Raises:
        ValueError: no ratio and no usable z-step, a z-step that is not an integer multiple of the target z-step,
            a file z-step inconsistent with the configured ``z_step`` or ``ratio``, or too few slices.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ratio: int | None = None,
        target_z_step: float | None = None,
        axis: int = 0,
        ratio_key: str = "ratio",
        z_step: float | None = None,
        min_slices: int = 2,
    ) -> None:
        super().__init__(keys)
        self.ratio = None if ratio is None else check_ratio(ratio)
        self.target_z_step = None if target_z_step is None else self._positive(target_z_step, "target_z_step")
        self.z_step = None if z_step is None else self._positive(z_step, "z_step")
        self.axis = axis
        self.ratio_key = ratio_key
        self.min_slices = int(min_slices)
        if self.ratio is not None and self.z_step is not None and self.target_z_step is not None:
            derived = ratio_from_z_steps(self.z_step, self.target_z_step)
            if derived != self.ratio:
                raise BundleInputError(
                    f"z_step {self.z_step} / target_z_step {self.target_z_step} gives ratio {derived}, but ratio "
                    f"{self.ratio} was configured; give consistent values (or only one of them)."
                )

    @staticmethod
    def _positive(value: Any, name: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BundleInputError(f"{name} must be a positive number, got {value!r}.") from None
        if not (number > 0 and np.isfinite(number)):
            raise BundleInputError(f"{name} must be a positive number, got {value!r}.")
        return number

    def _z_step(self, img: Any, name: Any) -> float | None:
        """The acquired z-step: the file's if it records one (checked against ``z_step``), else ``z_step``."""
        file_step = None
        if isinstance(img, MetaTensor) and _z_step_known(img, self.axis):
            file_step = float(affine_to_spacing(img.affine, r=3)[self.axis])
        if file_step is not None and self.z_step is not None and not np.isclose(file_step, self.z_step, rtol=1e-3):
            raise BundleInputError(
                f"{name}: the file records a z-step of {file_step:g} but z_step {self.z_step:g} was configured; "
                "fix the file's PhysicalSizeZ or the z_step."
            )
        return file_step if file_step is not None else self.z_step

    def _with_z_step(self, img: MetaTensor, z_step: float) -> MetaTensor:
        """A copy of a stack whose file has no z-step, given the configured one so the prediction's voxel size is
        right (the input object is left untouched)."""
        img = img.clone()
        img.meta = dict(img.meta)
        affine = img.affine.clone().to(torch.float64)
        column = affine[:3, self.axis]
        norm = float(torch.linalg.norm(column))
        affine[:3, self.axis] = column / (norm if norm > 0 else 1.0) * z_step
        img.affine = affine
        known = known_spacing_axes(img.meta)
        if known is not None:
            known[self.axis] = True
            img.meta["spacing_known_zyx"] = known
            img.meta["spacing_known"] = bool(known.all())
        return img

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            name = img.meta.get("filename_or_obj", key) if isinstance(img, MetaTensor) else key
            if hasattr(img, "shape") and len(img.shape) == 4 and img.shape[self.axis + 1] < self.min_slices:
                raise BundleInputError(
                    f"{name}: too few slices: {img.shape[self.axis + 1]} acquired slice(s) along spatial axis "
                    f"{self.axis}, at least {self.min_slices} are needed to rebuild the full grid."
                )
            z_step = self._z_step(img, name)
            if isinstance(img, MetaTensor) and z_step is not None and not _z_step_known(img, self.axis):
                d[key] = self._with_z_step(img, z_step)
            from_steps = None
            if z_step is not None and self.target_z_step is not None:
                try:
                    from_steps = ratio_from_z_steps(z_step, self.target_z_step)
                except ValueError as exc:
                    raise BundleInputError(f"{name}: {exc}") from None
            if self.ratio is not None and from_steps is not None and from_steps != self.ratio:
                raise BundleInputError(
                    f"{name}: its z-step {z_step:g} gives ratio {from_steps} against the target z-step "
                    f"{self.target_z_step}, but ratio {self.ratio} was configured; fix the file's PhysicalSizeZ, "
                    "z_step or the ratio."
                )
            ratio = self.ratio if self.ratio is not None else from_steps
            if ratio is None:
                raise BundleInputError(
                    f"{name}: no acquisition ratio: the file records no z-step; set 'ratio', or 'z_step' (the "
                    "acquired slice spacing) with 'target_z_step'."
                )
            d[self.ratio_key] = ratio
        return d
