"""
The exported form of a SparseSSP model: sparse stack in, full Z grid out, one structure fixed.

:class:`SparseStackPredictor` wraps a trained :class:`~sparsessp_monai.networks.SparseSSPNet` so that it runs where
neither MONAI nor this package is available (TorchScript in bioimage.io consumers, ONNX runtimes): the prefix
Z-resampling of the bundle becomes a constant matrix product and the structure's task id a constant, so its one
input is the stack of acquired slices and its one output the predicted volume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.bundle import ConfigParser
from torch import nn

from sparsessp_monai.transforms.array import PrefixResampleZ, check_ratio

__all__ = ["SparseStackPredictor", "acquired_slices", "bundle_predictor", "load_bundle_network", "z_resample_matrix"]


def acquired_slices(full_depth: int, ratio: int, offset: int = 0) -> int:
    """Number of acquired slices ``n`` of a ``full_depth`` grid sampled every ``ratio`` slices from ``offset``."""
    ratio = check_ratio(ratio)
    if not 0 <= offset < ratio or offset >= full_depth:
        raise ValueError(f"offset must be in [0, min(ratio={ratio}, depth={full_depth})), got {offset}.")
    return len(range(offset, full_depth, ratio))


def z_resample_matrix(n: int, ratio: int, full_depth: int, mode: str = "trilinear", offset: int = 0) -> torch.Tensor:
    """The ``(full_depth, n)`` float32 matrix ``M`` with ``full = M @ sparse`` along Z for :class:`PrefixResampleZ`.

    Every mode of :class:`~sparsessp_monai.transforms.PrefixResampleZ` is linear along Z, so its effect on a stack
    is that of its effect on the ``n`` unit slices: column ``k`` of ``M`` is the resampled ``k``-th unit stack. It
    is read off the transform itself (not re-derived) so the export cannot drift from the bundle's preprocessing.
    """
    # the unit slices as one (C=1, Z=n, Y=n, X=1) volume: voxel (0, k, j, 0) is 1 where k == j
    basis = torch.eye(n, dtype=torch.float64)[None, :, :, None]
    full = PrefixResampleZ(mode=mode, ratio=ratio, target_depth=full_depth, offset=offset)(basis)
    return torch.as_tensor(full)[0, :, :, 0].to(torch.float32).contiguous()


class SparseStackPredictor(nn.Module):
    """
    A SparseSSP network for one structure, fed the sparse stack of acquired slices: ``(B, C, n, H, W)`` ->
    ``(B, out_channels, depth, H, W)``.

    For a ``"prefix"`` network (the bundle's), the stack is first resampled to the network's full grid exactly as
    the bundle's :class:`~sparsessp_monai.transforms.PrefixResampleZ` does (``mode``, ``ratio``, ``offset``:
    acquired slice ``k`` at full-grid index ``offset + k * ratio``, ``n = ceil((depth - offset) / ratio)``),
    as the product with the constant :func:`z_resample_matrix` ``(depth, n)``; a ``"suffix"`` network takes the
    stack as it is (``n = depth // ratio``). The network is then called with the fixed ``task`` id, for every
    sample of the batch.

    Intensity normalisation (z-score per image and channel) is not part of the module: the bioimage.io package
    declares it as preprocessing, as the bundle applies it to the sparse stack before resampling.

    Scriptable (``torch.jit.script``) and exportable to ONNX: no Python-side branches depend on the input.

    Args:
        network: a :class:`~sparsessp_monai.networks.SparseSSPNet` (or any module taking ``(x, task)``) in eval mode.
        depth: full-grid depth ``D`` the network expects (``network.depth`` of a SparseSSPNet).
        ratio: acquisition ratio ``r``.
        mode: prefix resampling mode, one of :data:`~sparsessp_monai.transforms.PREFIX_MODES`.
        task: task id of the structure (index in the bundle's ``structures``); ``None`` for a network without task
            conditioning.
        offset: full-grid index of the first acquired slice.
        z_mapping: ``"prefix"`` (resample before the network) or ``"suffix"`` (the network takes the stack).
    """

    def __init__(
        self,
        network: nn.Module,
        depth: int,
        ratio: int,
        mode: str = "trilinear",
        task: int | None = None,
        offset: int = 0,
        z_mapping: str = "prefix",
    ) -> None:
        super().__init__()
        self.network = network
        self.depth, self.ratio, self.offset = int(depth), check_ratio(ratio), int(offset)
        self.mode = mode if z_mapping == "prefix" else "none"
        if z_mapping == "prefix":
            self.in_depth = acquired_slices(self.depth, self.ratio, self.offset)
            matrix = z_resample_matrix(self.in_depth, self.ratio, self.depth, mode, self.offset)
        elif z_mapping == "suffix":
            # the network upsamples Z itself; an identity keeps one code path for scripting and ONNX
            self.in_depth = self.depth // self.ratio
            matrix = torch.eye(self.in_depth)
        else:
            raise ValueError(f"z_mapping must be 'prefix' or 'suffix', got {z_mapping!r}.")
        self.register_buffer("z_matrix", matrix)
        self.has_task = task is not None
        # a (1,) id: the network broadcasts one id over the batch
        self.register_buffer("task", torch.tensor([0 if task is None else int(task)], dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: sparse stack ``(B, C, n, H, W)``; returns the prediction ``(B, out_channels, depth, H, W)``."""
        # (D, n) x (B, C, n, H, W) -> (B, C, D, H, W): the prefix resampling along Z
        full = torch.einsum("dk,bckhw->bcdhw", self.z_matrix.to(x.dtype), x)
        if self.has_task:
            return self.network(full, self.task)
        return self.network(full, None)


def load_bundle_network(
    config_file: str | os.PathLike | Sequence[str | os.PathLike],
    weights: str | os.PathLike | None = None,
    ratio: int | None = None,
) -> tuple[nn.Module, ConfigParser]:
    """The bundle's ``network_def`` (CPU, eval mode) with ``weights`` loaded, and the parsed config.

    Args:
        config_file: a bundle config (e.g. ``bundle/configs/train.json``) or a list merged in order, as
            ``python -m monai.bundle run --config_file`` merges them (overlays may set ``"network_def#..."`` ids).
        weights: a checkpoint of the network: a plain ``state_dict`` (the bundle's ``models/model.pt``) or a dict
            holding it under ``"model"`` (``ResumableCheckpoint`` files); ``None`` keeps the random initialisation.
        ratio: acquisition ratio, written to the config's ``ratio`` before the network is built.
    """
    parser = ConfigParser()
    parser.read_config(config_file)
    if ratio is not None:
        parser["ratio"] = check_ratio(ratio)
    network = parser.get_parsed_content("network_def", instantiate=True)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        network.load_state_dict(state)
    return network.eval(), parser


def bundle_predictor(
    network: nn.Module, parser: ConfigParser, structure: str, ratio: int, mode: str | None = None
) -> SparseStackPredictor:
    """:class:`SparseStackPredictor` of a bundle network for ``structure`` (one of the config's ``structures``).

    ``mode`` defaults to the config's ``prefix_mode``; depth, z-mapping and task conditioning come from the
    :class:`~sparsessp_monai.networks.SparseSSPNet` itself.
    """
    structures = list(parser.get_parsed_content("structures"))
    if structure not in structures:
        raise ValueError(f"unknown structure {structure!r}; the bundle's structures are: {', '.join(structures)}.")
    task = structures.index(structure) if getattr(network, "num_tasks", 0) else None
    mode = parser.get_parsed_content("prefix_mode") if mode is None else mode
    return SparseStackPredictor(
        network, network.depth, ratio, mode=mode, task=task, z_mapping=getattr(network, "z_mapping", "prefix")
    ).eval()
