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

from sparsessp_monai.io import OmeTiffWriter, ome_tiff_name_formatter
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


class ResolveZRatiod(MapTransform):
    """
    Work out the acquisition ratio of a genuinely sparse stack and store it under ``ratio_key``.

    The ratio is the configured ``ratio``, else the stack's z-step (from its affine, i.e. OME ``PhysicalSizeZ`` or
    the NIfTI header) divided by ``target_z_step``. When both are known they must agree.

    Args:
        keys: the image key (one).
        ratio: configured ratio, or ``None`` to read it from the file's z-step.
        target_z_step: z-step of the full grid (same unit as the file's spacing, micrometres for OME-TIFF).
        axis: the sparse spatial axis.
        ratio_key: where to write the ratio.

    Raises:
        ValueError: no ratio and no usable z-step, or a file z-step inconsistent with the configured ratio.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ratio: int | None = None,
        target_z_step: float | None = None,
        axis: int = 0,
        ratio_key: str = "ratio",
    ) -> None:
        super().__init__(keys)
        self.ratio = None if ratio is None else _check_ratio(ratio)
        self.target_z_step = target_z_step
        self.axis = axis
        self.ratio_key = ratio_key

    def _file_ratio(self, img: Any) -> int | None:
        if not isinstance(img, MetaTensor) or self.target_z_step is None or img.meta.get("spacing_known") is False:
            return None
        z_step = float(affine_to_spacing(img.affine, r=3)[self.axis])
        return ratio_from_z_steps(z_step, float(self.target_z_step))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            name = d[key].meta.get("filename_or_obj", key) if isinstance(d[key], MetaTensor) else key
            from_file = self._file_ratio(d[key])
            if self.ratio is not None and from_file is not None and from_file != self.ratio:
                raise ValueError(
                    f"{name}: its z-step gives ratio {from_file} against the target z-step {self.target_z_step}, "
                    f"but ratio {self.ratio} was configured; fix the file's PhysicalSizeZ or the ratio."
                )
            ratio = self.ratio if self.ratio is not None else from_file
            if ratio is None:
                raise ValueError(
                    f"{name}: no acquisition ratio: set 'ratio', or 'target_z_step' for a file that records its z-step."
                )
            d[self.ratio_key] = ratio
        return d


class SavePredictiond(MapTransform):
    """
    Save each prediction as ``<output_dir>/<input name>_<structure>.<format>`` with its full-grid voxel size.

    ``output_format`` ``"ome.tif"`` writes OME-TIFF with ``PhysicalSizeX/Y/Z`` and the structure as channel name;
    ``"nii.gz"`` writes NIfTI with the full-grid affine. The prediction carries the input's meta (after prefix
    resampling), so its affine is the thin-slice grid.

    Args:
        keys: the prediction key.
        output_dir: where to write (a staging folder when used with :class:`PublishOutputs`).
        output_format: ``"ome.tif"`` or ``"nii.gz"``.
        structure_key: the data key naming the predicted structure.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        output_format: str = "ome.tif",
        structure_key: str = "structure",
    ) -> None:
        super().__init__(keys)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {tuple(OUTPUT_FORMATS)}, got {output_format!r}.")
        self.output_dir = str(output_dir)
        self.output_format = output_format
        self.structure_key = structure_key

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
        return d


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
    """

    def __init__(self, staging_dir: str | os.PathLike, output_dir: str | os.PathLike) -> None:
        self.staging_dir = Path(staging_dir)
        self.output_dir = Path(output_dir)
        self.logger = logging.getLogger(__name__)

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
        self.output_dir.mkdir(parents=True, exist_ok=True)
        moved = 0
        staged = sorted(self.staging_dir.rglob("*")) if self.staging_dir.is_dir() else []
        for path in staged:
            if path.is_file():
                target = self.output_dir / path.relative_to(self.staging_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                moved += 1
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.logger.info(f"wrote {moved} file(s) to {self.output_dir}")

    def discard(self, engine: Engine, e: Exception) -> None:
        """Delete the staged outputs of a failed run and re-raise its exception."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        raise e
