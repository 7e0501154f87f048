"""
What the bundle's engines need beyond MONAI and Ignite: bundle-root and flag helpers, a bf16 autocast inferer,
Gaussian sliding windows one slab at a time.
"""

from sparsessp_monai.engines.bundle_utils import as_bool, default_bundle_root, fast_bf16, latest_checkpoint
from sparsessp_monai.engines.errors import BundleInputError, find_input_error, report_input_errors_briefly
from sparsessp_monai.engines.inferers import AutocastInferer, FlipAveragingInferer, SlabSlidingWindowInferer
from sparsessp_monai.engines.memory import keep_freed_memory

__all__ = [
    "AutocastInferer",
    "BundleInputError",
    "FlipAveragingInferer",
    "SlabSlidingWindowInferer",
    "as_bool",
    "default_bundle_root",
    "fast_bf16",
    "find_input_error",
    "keep_freed_memory",
    "latest_checkpoint",
    "report_input_errors_briefly",
]
