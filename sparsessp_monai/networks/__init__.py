"""Networks: the mixed-dimension SparseSSP network and its blocks."""

from sparsessp_monai.networks.blocks import (
    ChannelMix3d,
    ChannelToDepth,
    DepthToChannel,
    DynamicHead,
    Fold3dTo2d,
    Fp32AtDepth2,
    NoCondition,
    NoZContext,
    TaskFiLM,
    Unfold2dTo3d,
    ZContext,
)
from sparsessp_monai.networks.memory_format import channels_last_3d
from sparsessp_monai.networks.residual import ResidualSparseSSP
from sparsessp_monai.networks.sparsessp_net import TOPOLOGIES, SparseSSPNet

__all__ = [
    "TOPOLOGIES",
    "ChannelMix3d",
    "ChannelToDepth",
    "DepthToChannel",
    "DynamicHead",
    "Fold3dTo2d",
    "Fp32AtDepth2",
    "NoCondition",
    "NoZContext",
    "ResidualSparseSSP",
    "SparseSSPNet",
    "TaskFiLM",
    "Unfold2dTo3d",
    "ZContext",
    "channels_last_3d",
]
