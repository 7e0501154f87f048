"""
Ignite handlers of the bundle: per-image metric handlers, per-structure reports, resumable checkpoints,
all-or-nothing inference outputs and the thin-slice comparison against interpolation baselines.
"""

from sparsessp_monai.handlers.checkpoint import AtomicDiskSaver, BestModelSaver, ResumableCheckpoint
from sparsessp_monai.handlers.metrics import ImagePearson, ImageR2
from sparsessp_monai.handlers.per_structure import ALL_IMAGES, ALL_STRUCTURES, PerStructureMetricsSaver
from sparsessp_monai.handlers.publish import PublishOutputs
from sparsessp_monai.handlers.thin_slice import ThinSliceComparison
from sparsessp_monai.handlers.training_state import BestMetricState, RandomStates

__all__ = [
    "ALL_IMAGES",
    "ALL_STRUCTURES",
    "AtomicDiskSaver",
    "BestMetricState",
    "BestModelSaver",
    "ImagePearson",
    "ImageR2",
    "PerStructureMetricsSaver",
    "PublishOutputs",
    "RandomStates",
    "ResumableCheckpoint",
    "ThinSliceComparison",
]
