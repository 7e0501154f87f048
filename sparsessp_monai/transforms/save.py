"""Save predictions on the full grid (OME-TIFF or NIfTI) with an optional PNG preview."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelWriter
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform, SaveImage
from monai.utils import convert_data_type

from sparsessp_monai.data.inputs import OUTPUT_NAME_KEY, check_name_part, input_stem
from sparsessp_monai.engines.bundle_utils import as_bool
from sparsessp_monai.engines.errors import BundleInputError
from sparsessp_monai.io import OmeTiffWriter, known_spacing_axes, save_projection_preview
from sparsessp_monai.transforms.finite import count_nonfinite

__all__ = ["OUTPUT_FORMATS", "SavePredictiond"]

OUTPUT_FORMATS = {"ome.tif": (OmeTiffWriter, ".ome.tif"), "nii.gz": (NibabelWriter, ".nii.gz")}


def _volume(x: Any) -> Any:
    """A (C, S0, S1, S2) tensor/array from a possibly batched (1, C, S0, S1, S2) one; None for anything else."""
    if not hasattr(x, "shape") or not hasattr(x, "ndim"):
        return None
    if x.ndim == 5 and x.shape[0] == 1:
        x = x[0]
    return x if x.ndim == 4 else None


class SavePredictiond(MapTransform):
    """
    Save each prediction as ``<output_dir>/<name>_<structure>.<format>`` with its full-grid voxel size, and
    optionally a PNG preview ``<name>_<structure>_preview.png``. ``<name>`` is the data's ``name_key`` entry (the
    unique output name :func:`sparsessp_monai.data.build_inference_datalist` gives every input), else the input
    file name without its suffix.

    A prediction with a NaN or infinite value (a diverged or broken model) is refused before anything of it is
    written: the error names the input file, and :class:`~sparsessp_monai.handlers.PublishOutputs` then publishes
    nothing of the run.

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
        name_key: the data key holding the output name.

    Raises:
        BundleInputError: a non-finite prediction, or a structure name that cannot be part of a file name.
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
        name_key: str = OUTPUT_NAME_KEY,
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
        self.name_key = name_key
        self.logger = logging.getLogger(__name__)

    def _source(self, d: Mapping[Hashable, Any], pred: Any) -> str:
        """The input file of a prediction (from its meta, else the input's), or ``""``."""
        source = pred.meta.get("filename_or_obj") if isinstance(pred, MetaTensor) else None
        image = _volume(d.get(self.image_key))
        if not source and isinstance(image, MetaTensor):
            source = image.meta.get("filename_or_obj")
        return str(source or "")

    def _preview(self, d: Mapping[Hashable, Any], pred: Any, name: str, structure: str) -> None:
        """Write ``<name>_<structure>_preview.png`` beside the prediction."""
        image = _volume(d.get(self.image_key))
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
        structure = check_name_part(str(d.get(self.structure_key, "pred")))
        writer, ext = OUTPUT_FORMATS[self.output_format]
        saver = SaveImage(
            output_dir=self.output_dir,
            output_ext=ext,
            output_dtype=np.float32,
            resample=False,
            separate_folder=False,
            writer=writer,
            print_log=False,
        )
        if writer is OmeTiffWriter:
            saver.set_options(init_kwargs={"channel_names": [structure]})
        for key in self.key_iterator(d):
            pred = d[key]
            if isinstance(pred, torch.Tensor) and pred.ndim == 5:  # a batch of one
                pred = pred[0]
            source = self._source(d, pred)
            _check_finite(pred, source, structure)
            name = d.get(self.name_key)
            if isinstance(name, (list, tuple)) and len(name) == 1:  # a collated batch of one
                name = name[0]
            name = str(name or input_stem(source or "prediction"))
            Path(self.output_dir).mkdir(parents=True, exist_ok=True)
            # an explicit file name (SaveImage appends the extension): the datalist made it unique for the run
            saver(pred, filename=str(Path(self.output_dir) / f"{name}_{structure}"))
            if self.save_preview:
                self._preview(d, pred, name, structure)
        return d


def _check_finite(pred: Any, source: str, structure: str) -> None:
    """Refuse a prediction with NaN / infinite values, naming the input it was made from."""
    bad = count_nonfinite(pred)
    if bad:
        raise BundleInputError(
            f"{source or 'prediction'}: the {structure!r} prediction has {bad} NaN or infinite value(s) of "
            f"{torch.as_tensor(pred).numel()}; nothing is published (the model may have diverged: check the "
            "checkpoint)."
        )


def _spacing_known(img: MetaTensor) -> bool:
    known = known_spacing_axes(img.meta)
    if known is not None:
        return bool(known.all())
    return bool(np.all(convert_data_type(img.meta.get("spacing_known", True), np.ndarray)[0]))
