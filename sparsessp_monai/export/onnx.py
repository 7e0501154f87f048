"""
ONNX export of the SparseSSP network and of its bioimage.io form (:class:`SparseStackPredictor`), checked against
eager PyTorch with onnxruntime.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, deprecated but present in torch 2.13) is
used: the network validates its task ids with data-dependent checks (``task < num_tasks``) that ``torch.export``
(the dynamo exporter, the default since torch 2.9) refuses (``GuardOnDataDependentSymNode``), while tracing
records them as constants for the example ids and keeps batch, height and width dynamic. Needs the ``onnx`` extra
(``onnx``, ``onnxruntime``; ``onnxscript`` is not needed by this exporter).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparsessp_monai.io.publish import atomic_write

__all__ = [
    "ONNX_OPSET",
    "export_network_onnx",
    "export_onnx",
    "export_predictor_onnx",
    "onnx_max_abs_diff",
]

ONNX_OPSET = 17
"""Opset of the exported graphs (Einsum needs 12, InstanceNormalization and ConvTranspose are older)."""

# batch, height and width of a (B, C, D, H, W) volume may change; depth is fixed by the network's folding
_VOLUME_AXES = {0: "batch", 3: "height", 4: "width"}


def export_onnx(
    module: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    path: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = ONNX_OPSET,
) -> Path:
    """Trace ``module`` (eval mode, CPU) on ``example_inputs`` and write the ONNX graph to ``path`` atomically."""
    module = module.eval()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # the tracer warns about every shape check it turns into a constant: expected here (see module doc)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # instance norm always normalises with the input's statistics, in eval mode too: nothing is lost
            warnings.filterwarnings("ignore", "ONNX export mode is set to TrainingMode.EVAL", UserWarning)
            # the TorchScript-based exporter is chosen on purpose (module doc); its deprecation notices say nothing
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based", DeprecationWarning)
            warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    tuple(example_inputs),
                    str(tmp),
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                    opset_version=opset,
                    dynamo=False,
                )

    return atomic_write(path, write)


def export_network_onnx(network: nn.Module, path: str | os.PathLike, height: int = 64, width: int = 64) -> Path:
    """Export a :class:`~sparsessp_monai.networks.SparseSSPNet` with inputs ``image`` ``(B, C, D_in, H, W)`` and,
    for a task-conditioned network, ``task`` ``(B,)`` int64; output ``pred`` ``(B, out_channels, depth, H, W)``.

    One task id per sample (``(B,)``, not the ``(1,)`` broadcast form); ``B``, ``H`` and ``W`` are dynamic.
    """
    image = torch.randn(2, network.in_channels, network.in_depth, height, width)
    if network.num_tasks:
        task = torch.arange(2, dtype=torch.int64) % network.num_tasks
        inputs, names, axes = (image, task), ["image", "task"], {"image": _VOLUME_AXES, "task": {0: "batch"}}
    else:
        inputs, names, axes = (image,), ["image"], {"image": _VOLUME_AXES}
    return export_onnx(network, inputs, path, names, ["pred"], {**axes, "pred": _VOLUME_AXES})


def export_predictor_onnx(
    predictor: nn.Module, path: str | os.PathLike, height: int = 64, width: int = 64, in_channels: int = 1
) -> Path:
    """Export a :class:`~sparsessp_monai.export.SparseStackPredictor`: input ``sparse_stack`` ``(B, C, n, H, W)``,
    output ``prediction`` ``(B, out_channels, depth, H, W)``; ``B``, ``H`` and ``W`` are dynamic."""
    x = torch.randn(1, in_channels, predictor.in_depth, height, width)
    axes = {"sparse_stack": _VOLUME_AXES, "prediction": _VOLUME_AXES}
    return export_onnx(predictor, (x,), path, ["sparse_stack"], ["prediction"], axes)


def onnx_max_abs_diff(path: str | os.PathLike, module: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between onnxruntime (CPU) on the graph at ``path`` and eager ``module``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), inputs)}
    (got,) = session.run(None, feeds)
    with torch.no_grad():
        expected = module.eval()(*inputs).numpy()
    if got.shape != expected.shape:
        raise ValueError(f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape}.")
    return float(np.abs(got - expected).max())
