"""
MONAI image writer for OME-TIFF: :class:`OmeTiffWriter` and :func:`ome_tiff_name_formatter` for ``SaveImage``.

The writer takes channel-first (C, Z, Y, X) data and stores the voxel size from the affine (and the per-axis
"known" flags of :class:`~sparsessp_monai.io.reader.TiffReader`) as OME ``PhysicalSize{Z,Y,X}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import DtypeLike, NdarrayOrTensor, PathLike
from monai.data.folder_layout import default_name_formatter
from monai.data.image_writer import ImageWriter
from monai.data.utils import affine_to_spacing
from monai.utils import GridSampleMode, GridSamplePadMode, convert_data_type

from .reader import known_spacing_axes
from .tiff import write_ome_tiff

__all__ = ["OmeTiffWriter", "ome_tiff_name_formatter"]


def ome_tiff_name_formatter(metadict: dict | None, saver: Any) -> dict:
    """
    ``SaveImage(output_name_formatter=...)`` that treats ``.ome.tif``/``.ome.tiff`` as one extension.

    MONAI strips only the last extension of the input file name, so ``cell.ome.tif`` saved with postfix ``pred``
    would become ``cell.ome/cell.ome_pred.ome.tif``; with this formatter it becomes ``cell/cell_pred.ome.tif``.
    Otherwise it behaves like ``monai.data.folder_layout.default_name_formatter``.

    Args:
        metadict: meta data of the image being saved.
        saver: the ``SaveImage`` transform.

    Returns:
        Keyword arguments for ``FolderLayout.filename``.
    """
    kwargs = default_name_formatter(metadict, saver)
    subject = kwargs["subject"]
    lower = subject.lower()
    for suffix in (".ome.tiff", ".ome.tif"):
        if lower.endswith(suffix):
            # keep a single ".tif" for FolderLayout to strip, so that dots inside the stem survive
            kwargs["subject"] = subject[: -len(suffix)] + ".tif"
            break
    return kwargs


class OmeTiffWriter(ImageWriter):
    """
    MONAI image writer producing OME-TIFF files from channel-first (C, Z, Y, X) data.

    The voxel size written as ``PhysicalSize{Z,Y,X}`` (micrometres) is derived from the ``affine`` in the meta
    data with ``monai.data.utils.affine_to_spacing`` (the reader's convention is ``diag(sz, sy, sx, 1)``); origin
    and orientation cannot be stored in OME-TIFF and are dropped. If the meta data says ``spacing_known: False`` and
    the affine still has unit spacing, the physical sizes are left out so that "unknown" survives a round trip.
    Channel names come from the ``channel_names`` constructor argument, else from the ``channel_names`` meta key
    when it has one name per channel (note that a prediction whose meta was copied from the input image carries
    the *input's* channel names; pass explicit names in that case).

    Example::

        from monai.transforms import SaveImaged
        from sparsessp_monai.io import OmeTiffWriter, ome_tiff_name_formatter

        save = SaveImaged(
            keys="pred", output_dir="out", output_postfix="pred", output_ext=".ome.tif",
            writer=OmeTiffWriter, output_dtype=np.float32, output_name_formatter=ome_tiff_name_formatter,
        )
        save.set_options(init_kwargs={"channel_names": ["nucleus"]})  # optional explicit names

    Args:
        output_dtype: dtype of the written data; None keeps the data's dtype.
        scale: None (default) to write values as they are, or 255 / 65535 to clip to [0, 1] and scale to
            uint8 / uint16 (same meaning as in ``monai.data.PILWriter``).
        channel_names: explicit channel names, taking precedence over the meta data.
        kwargs: keyword arguments passed to ``ImageWriter`` (stored as attributes).
    """

    output_dtype: DtypeLike | None
    scale: int | None
    channel_names: Sequence[str] | None
    affine: np.ndarray | None

    def __init__(
        self,
        output_dtype: DtypeLike | None = np.float32,
        scale: int | None = None,
        channel_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if scale not in (None, 255, 65535):
            raise ValueError(f"scale must be None, 255 or 65535, got {scale!r}.")
        super().__init__(
            output_dtype=output_dtype,
            scale=scale,
            channel_names=channel_names,
            affine=None,
            spacing_known=True,
            spacing_known_zyx=None,
            meta_channel_names=None,
            **kwargs,
        )

    def set_data_array(
        self, data_array: NdarrayOrTensor, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs: Any
    ) -> None:
        """
        Store ``data_array`` as a channel-first (C, Z, Y, X) numpy array.

        Args:
            data_array: (C, Z, Y, X) data, or (Z, Y, X) when ``channel_dim`` is None.
            channel_dim: the channel axis of ``data_array`` (moved to the front); None adds a channel axis.
            squeeze_end_dims: ignored; OME-TIFF stores the axes explicitly so nothing needs squeezing.
            kwargs: ignored; accepted for compatibility with ``SaveImage`` options.

        Raises:
            ValueError: when the data is not 3D spatial.
        """
        data: np.ndarray = convert_data_type(data_array, np.ndarray)[0]
        data = data[None] if channel_dim is None else np.moveaxis(data, channel_dim, 0)
        if data.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects channel-first (C, Z, Y, X) data, got shape {tuple(data.shape)} "
                f"(channel_dim={channel_dim})."
            )
        self.data_obj = data

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = False, **options: Any) -> None:
        """
        Take the affine, channel names and spacing flag from ``meta_dict``; optionally resample.

        Args:
            meta_dict: meta data with optional keys ``affine``, ``original_affine``, ``spatial_shape``,
                ``channel_names`` and ``spacing_known``.
            resample: if True, resample the data from ``affine`` to ``original_affine`` / ``spatial_shape`` (e.g.
                to undo a ``Spacingd`` before saving). ``SaveImage`` passes False by default.
            options: ``mode``, ``padding_mode``, ``align_corners`` and ``dtype`` for
                ``ImageWriter.resample_if_needed`` when resampling (defaults ``bilinear``, ``border``, False and
                ``np.float64``, as in MONAI's writers).
        """
        original_affine, affine, spatial_shape = self.get_meta_info(meta_dict)
        affine = np.eye(4) if affine is None else convert_data_type(affine, np.ndarray)[0].astype(np.float64)
        if resample and original_affine is not None:
            target = convert_data_type(original_affine, np.ndarray)[0].astype(np.float64)
            shape = None if spatial_shape is None else [int(s) for s in convert_data_type(spatial_shape, np.ndarray)[0]]
            # on the same grid nothing is resampled, so the data keeps its dtype (resampling always gives float32)
            same_grid = np.allclose(affine, target) and (shape is None or list(self.data_obj.shape[1:]) == shape)
            if not same_grid:
                self.data_obj = self._resample_channels(self.data_obj, affine, target, shape, options)
                # the data now lies on the target grid; its exact affine is written, not the resampler's float copy
                affine = target
        self.affine = affine
        meta = meta_dict or {}
        # after collation/decollation the flag may arrive as a 0-d tensor or array rather than a bool
        self.spacing_known = bool(np.all(convert_data_type(meta.get("spacing_known", True), np.ndarray)[0]))
        self.spacing_known_zyx = known_spacing_axes(meta)
        names = meta.get("channel_names")
        self.meta_channel_names = [str(n) for n in names] if isinstance(names, (list, tuple)) else None

    @classmethod
    def _resample_channels(
        cls,
        data: np.ndarray,
        affine: np.ndarray,
        target_affine: np.ndarray,
        spatial_shape: Sequence[int] | None,
        options: dict[str, Any],
    ) -> np.ndarray:
        """Resample (C, Z, Y, X) ``data`` from ``affine`` to ``target_affine`` with ``resample_if_needed`` (float32).

        ``resample_if_needed`` takes the NIfTI layout (spatial axes first, extra axes last) and folds extra axes
        into the channels with a reshape, which mixes channels; one (Z, Y, X) channel at a time avoids that.
        """
        kwargs = {
            "mode": options.pop("mode", GridSampleMode.BILINEAR),
            "padding_mode": options.pop("padding_mode", GridSamplePadMode.BORDER),
            "align_corners": options.pop("align_corners", False),
            "dtype": options.pop("dtype", np.float64),
        }
        channels = [
            cls.resample_if_needed(np.ascontiguousarray(channel), affine, target_affine, spatial_shape, **kwargs)[0]
            for channel in data
        ]
        return np.stack(channels)

    def _resolve_channel_names(self, n_channels: int) -> list[str] | None:
        if self.channel_names is not None:
            names = [str(n) for n in self.channel_names]
            if len(names) != n_channels:
                raise ValueError(f"got {len(names)} channel names for {n_channels} channel(s).")
            return names
        names = self.meta_channel_names
        if names is None or len(names) != n_channels or not any(names):
            return None
        return names

    def write(self, filename: PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """
        Write the data as OME-TIFF (atomically, see :func:`write_ome_tiff`).

        Args:
            filename: output file name; parent folders are created.
            verbose: if True, log the file name.
            kwargs: ignored; accepted for compatibility with ``SaveImage`` write options.
        """
        super().write(filename, verbose=verbose)
        data = self.create_backend_obj(self.data_obj, dtype=self.output_dtype, scale=self.scale)
        affine = np.eye(4) if self.affine is None else self.affine
        spacing = [float(s) for s in affine_to_spacing(affine, r=3)]
        sizes: list[float | None] = list(spacing)
        if self.spacing_known_zyx is not None:
            # per-axis flags from TiffReader: a size the input file did not record stays unrecorded, whatever
            # value a resampling step gave it (e.g. 1/ratio after rebuilding the Z grid)
            sizes = [s if known else None for s, known in zip(spacing, self.spacing_known_zyx)]
        elif not self.spacing_known and np.allclose(spacing, 1.0):
            sizes = [None, None, None]
        write_ome_tiff(filename, data, sizes, self._resolve_channel_names(data.shape[0]))

    @classmethod
    def create_backend_obj(
        cls, data_array: NdarrayOrTensor, dtype: DtypeLike | None = None, scale: int | None = None, **kwargs: Any
    ) -> np.ndarray:
        """
        Convert the data to a numpy array of the output dtype, optionally clipping and scaling.

        Args:
            data_array: (C, Z, Y, X) data.
            dtype: output dtype; None keeps the data's dtype (or uint8/uint16 when ``scale`` is given).
            scale: None, 255 or 65535 (see the class docstring).
            kwargs: ignored.

        Returns:
            The array to write.
        """
        data: np.ndarray = convert_data_type(data_array, np.ndarray)[0]
        if scale is not None:
            data = np.clip(data, 0.0, 1.0) * scale
            if dtype is None or np.dtype(dtype).kind == "f":
                # rounding, not truncation, so that 1.0 maps exactly to the maximum
                dtype = np.uint8 if scale == 255 else np.uint16
            data = np.rint(data)
        if dtype is not None:
            data = data.astype(np.dtype(dtype), copy=False)
        return data
