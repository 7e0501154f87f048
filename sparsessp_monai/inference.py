"""
Full-volume inference on genuinely sparse stacks: find the inputs, resolve each stack's acquisition ratio, save
predictions on the full grid, and publish them all at once (a failed run leaves no partial output).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelWriter
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform, SaveImage
from monai.utils import convert_data_type

from sparsessp_monai.bundle_utils import as_bool
from sparsessp_monai.io import OmeTiffWriter, known_spacing_axes, ome_tiff_name_formatter, save_projection_preview
from sparsessp_monai.transforms.array import _check_ratio, ratio_from_z_steps

__all__ = [
    "INPUT_SUFFIXES",
    "PublishOutputs",
    "ResolveZRatiod",
    "SavePredictiond",
    "build_inference_datalist",
]

INPUT_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".nii", ".nii.gz")
OUTPUT_FORMATS = {"ome.tif": (OmeTiffWriter, ".ome.tif"), "nii.gz": (NibabelWriter, ".nii.gz")}


def _is_input(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(INPUT_SUFFIXES)


def build_inference_datalist(
    input_dir: str | os.PathLike, predict: Sequence[str] | str, structures: Sequence[str]
) -> list[dict[str, Any]]:
    """One item per (input stack, structure to predict), sorted by file name.

    Args:
        input_dir: folder of sparse transmitted-light stacks (TIFF, OME-TIFF or NIfTI), or a single file.
        predict: structure name(s) to predict for every stack.
        structures: the names the model was trained on, in task-id order.

    Raises:
        ValueError: no input files, or a structure name the model does not know.
    """
    predict = [predict] if isinstance(predict, str) else list(predict)
    unknown = [s for s in predict if s not in structures]
    if unknown or not predict:
        raise ValueError(f"unknown structure name(s) {unknown or predict}; this model knows {list(structures)}.")
    root = Path(input_dir)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.iterdir() if _is_input(p))
    else:
        raise ValueError(f"input folder {str(root)!r} does not exist.")
    if not files:
        raise ValueError(f"no TIFF/OME-TIFF/NIfTI stacks ({', '.join(INPUT_SUFFIXES)}) in {str(root)!r}.")
    return [{"image": str(f), "structure": s} for f in files for s in predict]


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
        self.ratio = None if ratio is None else _check_ratio(ratio)
        self.target_z_step = None if target_z_step is None else self._positive(target_z_step, "target_z_step")
        self.z_step = None if z_step is None else self._positive(z_step, "z_step")
        self.axis = axis
        self.ratio_key = ratio_key
        self.min_slices = int(min_slices)
        if self.ratio is not None and self.z_step is not None and self.target_z_step is not None:
            derived = ratio_from_z_steps(self.z_step, self.target_z_step)
            if derived != self.ratio:
                raise ValueError(
                    f"z_step {self.z_step} / target_z_step {self.target_z_step} gives ratio {derived}, but ratio "
                    f"{self.ratio} was configured; give consistent values (or only one of them)."
                )

    @staticmethod
    def _positive(value: Any, name: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
        if not (number > 0 and np.isfinite(number)):
            raise ValueError(f"{name} must be a positive number, got {value!r}.")
        return number

    def _z_step(self, img: Any, name: Any) -> float | None:
        """The acquired z-step: the file's if it records one (checked against ``z_step``), else ``z_step``."""
        file_step = None
        if isinstance(img, MetaTensor) and _z_step_known(img, self.axis):
            file_step = float(affine_to_spacing(img.affine, r=3)[self.axis])
        if file_step is not None and self.z_step is not None and not np.isclose(file_step, self.z_step, rtol=1e-3):
            raise ValueError(
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
                raise ValueError(
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
                    raise ValueError(f"{name}: {exc}") from None
            if self.ratio is not None and from_steps is not None and from_steps != self.ratio:
                raise ValueError(
                    f"{name}: its z-step {z_step:g} gives ratio {from_steps} against the target z-step "
                    f"{self.target_z_step}, but ratio {self.ratio} was configured; fix the file's PhysicalSizeZ, "
                    "z_step or the ratio."
                )
            ratio = self.ratio if self.ratio is not None else from_steps
            if ratio is None:
                raise ValueError(
                    f"{name}: no acquisition ratio: the file records no z-step; set 'ratio', or 'z_step' (the "
                    "acquired slice spacing) with 'target_z_step'."
                )
            d[self.ratio_key] = ratio
        return d


def _volume(x: Any) -> Any:
    """A (C, S0, S1, S2) tensor/array from a possibly batched (1, C, S0, S1, S2) one; None for anything else."""
    if not hasattr(x, "shape") or not hasattr(x, "ndim"):
        return None
    if x.ndim == 5 and x.shape[0] == 1:
        x = x[0]
    return x if x.ndim == 4 else None


class SavePredictiond(MapTransform):
    """
    Save each prediction as ``<output_dir>/<input name>_<structure>.<format>`` with its full-grid voxel size, and
    optionally a PNG preview ``<input name>_<structure>_preview.png``.

    ``output_format`` ``"ome.tif"`` writes OME-TIFF with ``PhysicalSizeX/Y/Z`` and the structure as channel name;
    ``"nii.gz"`` writes NIfTI with the full-grid affine. The prediction carries the input's meta (after prefix
    resampling), so its affine is the thin-slice grid: spacing ``z_step / ratio`` along the sparse axis and the
    origin of the first acquired slice.

    The preview shows orthogonal maximum-intensity projections (XY, XZ, YZ; see
    :func:`sparsessp_monai.io.save_projection_preview`) of the input rebuilt on the full grid | the prediction |
    the target, the last only when the data has a loaded ``label_key`` volume of the prediction's shape. Panels are
    stretched to the physical aspect ratio when the voxel size is known.

    Args:
        keys: the prediction key.
        output_dir: where to write (a staging folder when used with :class:`PublishOutputs`).
        output_format: ``"ome.tif"`` or ``"nii.gz"``.
        structure_key: the data key naming the predicted structure.
        save_preview: also write the PNG preview.
        image_key: the input volume shown first in the preview.
        label_key: the target volume shown last in the preview, when present.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_format: str = "ome.tif",
        structure_key: str = "structure",
        save_preview: bool = False,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(keys)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {tuple(OUTPUT_FORMATS)}, got {output_format!r}.")
        self.output_dir = str(output_dir)
        self.output_format = output_format
        self.structure_key = structure_key
        self.save_preview = as_bool(save_preview)
        self.image_key = image_key
        self.label_key = label_key
        self.logger = logging.getLogger(__name__)

    def _preview(self, d: Mapping[Hashable, Any], pred: Any, structure: str) -> None:
        """Write ``<input name>_<structure>_preview.png`` beside the prediction."""
        source = pred.meta.get("filename_or_obj") if isinstance(pred, MetaTensor) else None
        image = _volume(d.get(self.image_key))
        if not source and isinstance(image, MetaTensor):
            source = image.meta.get("filename_or_obj")
        name = Path(str(source or "prediction")).name
        for suffix in INPUT_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        panels = []
        if image is not None and tuple(image.shape[1:]) == tuple(pred.shape[1:]):
            panels.append(("input", image[:1]))
        panels.append(("prediction", pred[:1]))
        label = _volume(d.get(self.label_key))
        if label is not None:
            if tuple(label.shape[1:]) == tuple(pred.shape[1:]):
                panels.append(("target", label[:1]))
            else:
                self.logger.warning(
                    f"{name}: target shape {tuple(label.shape[1:])} differs from the prediction's "
                    f"{tuple(pred.shape[1:])}; the preview leaves it out."
                )
        spacing = None
        if isinstance(pred, MetaTensor) and _spacing_known(pred):
            spacing = [float(v) for v in affine_to_spacing(pred.affine, r=3)]
        save_projection_preview(Path(self.output_dir) / f"{name}_{structure}_preview.png", panels, spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        structure = str(d.get(self.structure_key, "pred"))
        writer, ext = OUTPUT_FORMATS[self.output_format]
        saver = SaveImage(
            output_dir=self.output_dir,
            output_postfix=structure,
            output_ext=ext,
            output_dtype=np.float32,
            resample=False,
            separate_folder=False,
            writer=writer,
            output_name_formatter=ome_tiff_name_formatter,
            print_log=False,
        )
        if writer is OmeTiffWriter:
            saver.set_options(init_kwargs={"channel_names": [structure]})
        for key in self.key_iterator(d):
            pred = d[key]
            if isinstance(pred, torch.Tensor) and pred.ndim == 5:  # a batch of one
                pred = pred[0]
            saver(pred)
            if self.save_preview:
                self._preview(d, pred, structure)
        return d


def _spacing_known(img: MetaTensor) -> bool:
    known = known_spacing_axes(img.meta)
    if known is not None:
        return bool(known.all())
    return bool(np.all(convert_data_type(img.meta.get("spacing_known", True), np.ndarray)[0]))


class PublishOutputs:
    """
    Ignite handler that makes a run's outputs all-or-nothing: everything is written to ``staging_dir`` and moved to
    ``output_dir`` when the engine completes; if the run fails, the staging folder is deleted and the exception
    propagates, so no partial prediction is ever left next to earlier results. Existing files in ``output_dir`` are
    only replaced by a completed run.

    Ignite runs only the first ``EXCEPTION_RAISED`` handler that raises, and MONAI's ``StatsHandler`` raises, so
    attach this handler before any ``StatsHandler`` (first in a bundle's handler list).

    Args:
        staging_dir: temporary folder the run writes to (same file system as ``output_dir``).
        output_dir: the final folder.
        inputs: input files (or datalist items with an ``image`` entry) that must never be replaced: a run whose
            outputs would land on one of them fails before anything is moved.
    """

    def __init__(
        self,
        staging_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        inputs: Sequence[Any] | None = None,
    ) -> None:
        self.staging_dir = Path(staging_dir)
        self.output_dir = Path(output_dir)
        self.inputs = {self._input_path(i) for i in inputs or []}
        self.logger = logging.getLogger(__name__)

    @staticmethod
    def _input_path(item: Any) -> Path:
        if isinstance(item, Mapping):
            item = item.get("image", "")
        return Path(str(item)).resolve()

    @staticmethod
    def make_staging_dir(output_dir: str | os.PathLike) -> str:
        """A fresh hidden folder name beside ``output_dir``; created by the first write, so a run that fails
        before writing anything leaves nothing behind."""
        out = Path(output_dir).resolve()
        return str(out.parent / f".{out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def attach(self, engine: Engine) -> None:
        """Publish on ``COMPLETED``; discard on ``EXCEPTION_RAISED`` (and re-raise)."""
        engine.add_event_handler(Events.COMPLETED, self.publish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.discard)

    def publish(self, engine: Engine | None = None) -> None:
        """Move every staged file into ``output_dir``."""
        staged = sorted(self.staging_dir.rglob("*")) if self.staging_dir.is_dir() else []
        moves = [(path, self.output_dir / path.relative_to(self.staging_dir)) for path in staged if path.is_file()]
        clash = [str(target) for _, target in moves if target.resolve() in self.inputs]
        if clash:
            # checked before anything moves, so the run stays all-or-nothing; EXCEPTION_RAISED discards the staging
            raise ValueError(
                f"refusing to overwrite input file(s) {clash[:3]} with outputs; choose another output_dir."
            )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        moved = 0
        for path, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved += 1
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.logger.info(f"wrote {moved} file(s) to {self.output_dir}")

    def discard(self, engine: Engine, e: Exception) -> None:
        """Delete the staged outputs of a failed run and re-raise its exception."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        raise e
