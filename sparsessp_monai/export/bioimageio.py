"""
bioimage.io model package (spec 0.5) of a trained SparseSSP model for one structure.

The package holds the :class:`~sparsessp_monai.export.SparseStackPredictor` of the network as TorchScript (and,
optionally, ONNX) weights, so it runs in bioimage.io consumers (``bioimageio.core``, ilastik, deepImageJ, napari
plugins) without MONAI or this package: input ``sparse_stack`` ``(batch, channel, z, y, x)`` with ``z = n`` acquired
slices, output ``prediction`` ``(batch, channel, z, y, x)`` on the full grid (``z = depth``). The bundle's z-score
normalisation is declared as preprocessing (``zero_mean_unit_variance`` per image), as the bundle applies it to the
sparse stack. Needs the ``bioimageio`` extra (``bioimageio.core``, ``bioimageio.spec``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from monai.transforms import NormalizeIntensity

from sparsessp_monai.data.synthetic_cells import SPACING_ZYX_UM, make_sample
from sparsessp_monai.export.onnx import ONNX_OPSET, export_predictor_onnx
from sparsessp_monai.export.wrapper import SparseStackPredictor
from sparsessp_monai.io.preview import save_projection_preview
from sparsessp_monai.io.publish import atomic_write, staged_folder
from sparsessp_monai.transforms.array import SubsampleZ

__all__ = [
    "CITATION",
    "bioimageio_rdf",
    "check_bioimageio_package",
    "demo_sparse_stack",
    "export_bioimageio_package",
]

CITATION = {
    "text": "Zhang et al., SparseSSP: 3D Subcellular Structure Prediction from Sparse-View Transmitted Light Images, "
    "ECCV 2024",
    "doi": "10.48550/arXiv.2407.02159",
    "url": "https://arxiv.org/abs/2407.02159",
}
"""The paper the model implements (bioimage.io ``cite`` entry)."""

FILES = {
    "torchscript": "weights_torchscript.pt",
    "onnx": "weights.onnx",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "sample_input": "sample_input.tif",
    "sample_output": "sample_output.tif",
    "cover": "cover.png",
    "documentation": "README.md",
    "license": "LICENSE",
}
"""File names inside the package."""


def demo_sparse_stack(structure: str, depth: int, ratio: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """A sparse transmitted-light stack ``(1, 1, n, size, size)`` of the package's synthetic cells: a test input for
    a model without real data at hand (every ``ratio``-th slice of a ``depth``-slice volume, from slice 0)."""
    light, _ = make_sample(structure, seed=seed, shape=(depth, size, size))
    return np.asarray(SubsampleZ(ratio)(light[None]))[None].astype(np.float32)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _predict(predictor: SparseStackPredictor, sparse: np.ndarray) -> np.ndarray:
    """The bundle's computation: z-score every image and channel of the sparse stack, then the predictor."""
    norm = NormalizeIntensity(channel_wise=True)
    x = torch.stack([torch.as_tensor(norm(torch.as_tensor(s))) for s in sparse]).float()
    with torch.no_grad():
        return predictor.eval()(x).numpy().astype(np.float32)


def _documentation(structure: str, predictor: SparseStackPredictor, step: int, formats: list[str]) -> str:
    n, depth, r, mode = predictor.in_depth, predictor.depth, predictor.ratio, predictor.mode
    topology = getattr(predictor.network, "topology", "3to2d")
    return f"""# SparseSSP: {structure} fluorescence from a sparse transmitted-light stack (r = {r})

Predicts the 3D fluorescence of **{structure}** from a transmitted-light (brightfield) stack of which only one Z
slice in {r} was acquired, following SparseSSP (Zhang et al., ECCV 2024, arXiv:2407.02159), as trained with
the `sparsessp_monai` MONAI bundle.

## Input
`sparse_stack`: `(batch, channel, z, y, x)` = `(B, 1, {n}, H, W)`, float32: the **{n} acquired slices** of a
{depth}-slice stack, acquired slice `k` at full-grid slice `{r} k`; `H` and `W` at least {2 * step} and multiples of
{step}. Preprocessing (declared in `rdf.yaml`): z-score per image and channel (`zero_mean_unit_variance` over
z, y, x), as the bundle normalises the sparse stack.

## Output
`prediction`: `(B, 1, {depth}, H, W)`, float32: the fluorescence on the **full Z grid** ({r}x the input's Z
sampling), in z-score units of the training targets (no postprocessing).

## What the weights compute
1. The sparse stack is resampled to the full grid along Z ("prefix" z-mapping, mode `{mode}`): a constant
   `({depth}, {n})` matrix, the bundle's `PrefixResampleZ` (acquired slices stay at their true z).
2. `SparseSSPNet` (topology `{topology}`; the paper's `3to2d`: 3D encoder, depth folded into channels, 2D
   decoder) predicts the fluorescence, with the structure's task id fixed for a multi-structure model.

Weights formats: {", ".join(formats)}. Longer stacks: predict blocks of {n} acquired slices.

## Validation
The package passes `bioimageio test rdf.yaml` (`bioimageio.core`): the test output is the bundle's own prediction
(MONAI z-score, then the eager PyTorch model) and is reproduced by every weights format. Accuracy: evaluate the
weights with the bundle's `evaluate.json` (MSE, MAE, R2 and Pearson r per structure).

## Limitations
Research use only, not for clinical or diagnostic use. The model predicts what the training data taught it; check
predictions against real fluorescence on data from your microscope before relying on them. Pixel size, Z step and
acquisition ratio must match the training data (`z` scale in `rdf.yaml`).

## Citation
Zhang et al., *SparseSSP: 3D Subcellular Structure Prediction from Sparse-View Transmitted Light Images*,
ECCV 2024, [arXiv:2407.02159](https://arxiv.org/abs/2407.02159).

## Licence
Apache-2.0 (see `LICENSE`).
"""


def bioimageio_rdf(
    structure: str,
    predictor: SparseStackPredictor,
    files: dict[str, Path],
    size_step: int,
    spacing_zyx: Sequence[float] = SPACING_ZYX_UM,
    authors: Sequence[str] = ("sparsessp-monai developers",),
) -> dict[str, Any]:
    """The ``rdf.yaml`` content (bioimage.io model spec 0.5) of a package whose ``files`` (name -> path in the
    package folder, keys of :data:`FILES`) are written; ONNX weights are listed when ``files`` holds them."""
    from bioimageio.spec.model.v0_5 import ModelDescr

    sz, sy, sx = (float(s) for s in spacing_zyx)
    r, n, depth, mode = predictor.ratio, predictor.in_depth, predictor.depth, predictor.mode
    topology = getattr(predictor.network, "topology", "3to2d")

    def space(axis: str, scale: float, size: Any) -> dict[str, Any]:
        return {"type": "space", "id": axis, "unit": "micrometer", "scale": scale, "size": size}

    def entry(key: str, **more: Any) -> dict[str, Any]:
        return {"source": files[key].name, "sha256": _sha256(files[key]), **more}

    xy_in = {"min": 2 * size_step, "step": size_step}
    inputs = [{
        "id": "sparse_stack",
        "description": f"the {n} acquired transmitted-light slices (one in {r} of {depth})",
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": ["transmitted_light"]},
            space("z", sz * r, n), space("y", sy, xy_in), space("x", sx, xy_in),
        ],
        "test_tensor": entry("test_input"),
        "sample_tensor": entry("sample_input"),
        "data": {"type": "float32"},
        "preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["z", "y", "x"]}}],
    }]
    outputs = [{
        "id": "prediction",
        "description": f"{structure} fluorescence on the full Z grid (z-score units)",
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": [structure]},
            space("z", sz, depth),
            space("y", sy, {"tensor_id": "sparse_stack", "axis_id": "y"}),
            space("x", sx, {"tensor_id": "sparse_stack", "axis_id": "x"}),
        ],
        "test_tensor": entry("test_output"),
        "sample_tensor": entry("sample_output"),
        "data": {"type": "float32"},
    }]
    torch_version = torch.__version__.split("+")[0]
    weights: dict[str, Any] = {"torchscript": entry("torchscript", pytorch_version=torch_version)}
    if "onnx" in files:
        weights["onnx"] = entry(
            "onnx", opset_version=ONNX_OPSET, parent="torchscript",
            comment="torch.onnx.export (TorchScript-based exporter) of the same eager module as the TorchScript",
        )
    return {
        "format_version": ModelDescr.implemented_format_version,
        "type": "model",
        "name": f"SparseSSP {structure} from sparse transmitted light r{r}",
        "description": (
            f"3D {structure} fluorescence predicted from a transmitted-light stack of which one Z slice in {r} was "
            f"acquired (SparseSSP, ECCV 2024): {mode} Z resampling to the full grid, then SparseSSPNet ({topology})."
        ),
        "authors": [{"name": a} for a in authors],
        "cite": [CITATION],
        "license": "Apache-2.0",
        "documentation": entry("documentation"),
        "covers": [entry("cover")],
        "attachments": [entry("license")],
        "tags": ["sparsessp", "3d", "fluorescence", "transmitted-light", "brightfield", "label-free",
                 "in-silico-labeling", "image-restoration", "pytorch", "monai", structure],
        "inputs": inputs,
        "outputs": outputs,
        "weights": weights,
    }


def check_bioimageio_package(rdf: str | os.PathLike) -> Any:
    """``bioimageio.core.test_model`` of a package (its own test: validation, test tensors, sizes) for every weights
    format; returns the ``ValidationSummary`` (``.status == "passed"`` on success)."""
    from bioimageio.core import test_model

    return test_model(str(rdf))


def export_bioimageio_package(
    predictor: SparseStackPredictor,
    out_dir: str | os.PathLike,
    structure: str,
    license_file: str | os.PathLike,
    test_input: np.ndarray | None = None,
    size_step: int = 16,
    with_onnx: bool = True,
    zip_path: str | os.PathLike | None = None,
    run_test: bool = True,
) -> tuple[Path, Any]:
    """Write the bioimage.io package of ``predictor`` into ``out_dir`` (replaced whole, published only when
    complete and, with ``run_test``, only once ``bioimageio.core``'s test passed); optionally also a zip file.

    Args:
        predictor: the model for one structure (see :func:`~sparsessp_monai.export.bundle_predictor`).
        out_dir: package folder; holds ``rdf.yaml`` and the files of :data:`FILES`.
        structure: the structure's name (channel name of the output, tags, documentation).
        license_file: the Apache-2.0 text copied into the package.
        test_input: raw sparse stack ``(B, C, n, H, W)``; default :func:`demo_sparse_stack` of ``structure``.
        size_step: ``H`` and ``W`` must be multiples of it (``SparseSSPNet.multiple``); the minimum is twice it.
        with_onnx: also export ONNX weights (``onnx`` extra).
        zip_path: where to write the zipped package (``.zip``), or ``None``.
        run_test: run :func:`check_bioimageio_package` before publishing; a failure raises ``RuntimeError``.

    Returns:
        ``(path of rdf.yaml, ValidationSummary or None)``.
    """
    from bioimageio.spec import ValidationContext, build_description, save_bioimageio_yaml_only
    from bioimageio.spec.model.v0_5 import ModelDescr

    if test_input is None:
        test_input = demo_sparse_stack(structure, predictor.depth, predictor.ratio, size=4 * size_step)
    test_input = np.asarray(test_input, dtype=np.float32)
    if test_input.ndim != 5 or test_input.shape[2] != predictor.in_depth:
        raise ValueError(
            f"test input must be a (B, C, {predictor.in_depth}, H, W) sparse stack, got shape {test_input.shape}."
        )
    record = {"structure": structure, "ratio": predictor.ratio, "mode": predictor.mode, "onnx": with_onnx}
    summary = None
    with staged_folder(out_dir, record, replace=True) as staging:
        files = {key: staging / name for key, name in FILES.items() if key != "onnx" or with_onnx}
        np.save(files["test_input"], test_input)
        test_output = _predict(predictor, test_input)
        np.save(files["test_output"], test_output)
        # sample tensors (for people and viewers): the first image, as (z, y, x) TIFF
        tifffile.imwrite(files["sample_input"], test_input[0, 0])
        tifffile.imwrite(files["sample_output"], test_output[0, 0])
        torch.jit.save(torch.jit.script(predictor), str(files["torchscript"]))
        formats = ["TorchScript"]
        if with_onnx:
            export_predictor_onnx(predictor, files["onnx"], 4 * size_step, 4 * size_step, test_input.shape[1])
            formats.append(f"ONNX (opset {ONNX_OPSET})")
        # the acquired slices repeated to the full grid, so input and prediction panels share one Z scale
        full_input = np.repeat(test_input[0, 0], predictor.ratio, axis=0)[: predictor.depth]
        save_projection_preview(
            files["cover"], [("input", full_input), ("prediction", test_output[0, 0])], SPACING_ZYX_UM
        )
        files["documentation"].write_text(
            _documentation(structure, predictor, size_step, formats), encoding="utf-8"
        )
        shutil.copyfile(license_file, files["license"])
        content = bioimageio_rdf(structure, predictor, files, size_step)
        with ValidationContext(root=staging, perform_io_checks=True):
            descr = build_description(content)
        if not isinstance(descr, ModelDescr):
            raise ValueError(f"the bioimage.io description is invalid:\n{descr.validation_summary.format()}")
        rdf = staging / "rdf.yaml"
        save_bioimageio_yaml_only(descr, rdf)
        if run_test:
            summary = check_bioimageio_package(rdf)
            if summary.status != "passed":
                raise RuntimeError(f"bioimageio.core's test of the package failed:\n{summary.format()}")
    rdf = Path(out_dir) / "rdf.yaml"
    if zip_path is not None:
        from bioimageio.spec import save_bioimageio_package_to_stream

        def write_zip(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                save_bioimageio_package_to_stream(rdf, output_stream=f)

        atomic_write(zip_path, write_zip)
    return rdf, summary
