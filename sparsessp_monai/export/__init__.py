"""Exports of a trained SparseSSP model: its sparse-stack form, ONNX graphs, and the bioimage.io package.

The bioimage.io functions need the ``bioimageio`` extra and the ONNX ones the ``onnx`` extra; both are imported
only when used, so this package imports without them.
"""

from sparsessp_monai.export.bioimageio import (
    CITATION,
    bioimageio_rdf,
    check_bioimageio_package,
    demo_sparse_stack,
    export_bioimageio_package,
)
from sparsessp_monai.export.onnx import (
    ONNX_OPSET,
    export_network_onnx,
    export_onnx,
    export_predictor_onnx,
    onnx_max_abs_diff,
)
from sparsessp_monai.export.wrapper import (
    SparseStackPredictor,
    acquired_slices,
    bundle_predictor,
    load_bundle_network,
    z_resample_matrix,
)

__all__ = [
    "CITATION",
    "ONNX_OPSET",
    "SparseStackPredictor",
    "acquired_slices",
    "bioimageio_rdf",
    "bundle_predictor",
    "check_bioimageio_package",
    "demo_sparse_stack",
    "export_bioimageio_package",
    "export_network_onnx",
    "export_onnx",
    "export_predictor_onnx",
    "load_bundle_network",
    "onnx_max_abs_diff",
    "z_resample_matrix",
]
