"""Data utilities for SparseSSP: the synthetic demo dataset generator (``synthetic_cells`` and its ``cell_*`` /
``filters`` modules), AllenCell / RepMode data preparation (``allencell`` and its ``allencell_*`` / ``repmode``
modules), sparse-stack and CT phantom writers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .allencell import import_repmode_pth, prepare_allencell
    from .collate import view_collate
    from .inputs import INPUT_SUFFIXES, build_inference_datalist
    from .sparse_stacks import write_sparse_stacks
    from .synthetic_cells import (
        GENERATOR_VERSION,
        SPACING_ZYX_UM,
        STRUCTURES,
        generate_demo_dataset,
        make_sample,
        make_sample_all_structures,
        sample_seed,
    )

# imported lazily so that ``python -m sparsessp_monai.data.synthetic_cells`` does not find the module already
# imported by its package (runpy would warn) and so importing the package stays cheap
_LAZY = {
    "GENERATOR_VERSION": "synthetic_cells",
    "SPACING_ZYX_UM": "synthetic_cells",
    "STRUCTURES": "synthetic_cells",
    "generate_demo_dataset": "synthetic_cells",
    "make_sample": "synthetic_cells",
    "make_sample_all_structures": "synthetic_cells",
    "sample_seed": "synthetic_cells",
    "write_sparse_stacks": "sparse_stacks",
    "INPUT_SUFFIXES": "inputs",
    "build_inference_datalist": "inputs",
    "prepare_allencell": "allencell",
    "import_repmode_pth": "allencell",
    "view_collate": "collate",
}

__all__ = [
    "GENERATOR_VERSION",
    "INPUT_SUFFIXES",
    "SPACING_ZYX_UM",
    "STRUCTURES",
    "build_inference_datalist",
    "generate_demo_dataset",
    "import_repmode_pth",
    "make_sample",
    "make_sample_all_structures",
    "prepare_allencell",
    "sample_seed",
    "view_collate",
    "write_sparse_stacks",
]


def __getattr__(name: str) -> Any:
    """Resolve the lazily imported public names (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """List the module attributes including the not yet imported lazy ones."""
    return sorted([*globals(), *_LAZY])
