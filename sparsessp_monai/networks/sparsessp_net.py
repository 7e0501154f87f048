"""SparseSSPNet: mixed-dimension UNet that predicts a full 3D volume from a (prefix-resampled) sparse Z stack."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

from sparsessp_monai.networks.blocks import (
    ChannelMix3d,
    ChannelToDepth,
    DepthToChannel,
    DynamicHead,
    Fold3dTo2d,
    NoCondition,
    TaskFiLM,
    Unfold2dTo3d,
)

__all__ = ["TOPOLOGIES", "SparseSSPNet"]

# topology -> (encoder dims, decoder dims)
TOPOLOGIES = {"3d": (3, 3), "2d": (2, 2), "3to2d": (3, 2), "2to3d": (2, 3)}


def z_strides(depth: int, levels: int) -> list[int]:
    """Z stride of each downsampling step: halve the depth while it stays even and at least 2 after halving."""
    strides, d = [], depth
    for _ in range(levels - 1):
        s = 2 if d % 2 == 0 and d >= 4 else 1
        strides.append(s)
        d //= s
    return strides


def _run_3d_block(
    block: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], depths: Sequence[int]
) -> torch.Tensor:
    """Run ``block(*inputs)``, in fp32 when it is a 3D block meeting depth 2 under CPU bf16 autocast (eager only).

    PyTorch's CPU kernel (checked on 2.13) returns garbage weight gradients (up to 1e36, then inf) for a bf16 3x3x3
    ``Conv3d`` whose input has depth 2 and 32 or more channels. ``depths`` are the depths the block's convolutions
    see. Other depths, the forward pass and CUDA are unaffected.
    """
    x = inputs[0]
    if (
        x.device.type == "cpu"
        and x.dim() == 5
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and 2 in depths
    ):
        with torch.autocast("cpu", enabled=False):
            return block(*(t.float() for t in inputs))
    return block(*inputs)


class _EncoderLevel(nn.Module):
    """A strided 3x3(x3) convolution (or the stem at level 0) followed by one more 3x3(x3) convolution."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, stride: Sequence[int] | int, act, norm, stem: bool):
        super().__init__()
        self.z_stride = int(stride[0]) if isinstance(stride, Sequence) else int(stride)
        if stem:
            # full resolution: one conv only; the costly 3D work happens at lower resolutions
            self.block = Convolution(dims, in_ch, out_ch, kernel_size=3, act=act, norm=norm)
        else:
            self.block = nn.Sequential(
                Convolution(dims, in_ch, out_ch, strides=stride, kernel_size=3, act=act, norm=norm),
                Convolution(dims, out_ch, out_ch, kernel_size=3, act=act, norm=norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # exported models run without autocast
            return self.block(x)
        return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_3d_block(self.block, [x], [x.shape[2], -(-x.shape[2] // self.z_stride)])


class _DecoderLevel(nn.Module):
    """Learned upsampling, concatenation with the skip, two 3x3(x3) convolutions, then task conditioning."""

    def __init__(
        self, dims: int, in_ch: int, skip_ch: int, out_ch: int, scale: Sequence[int], act, norm, condition: nn.Module
    ):
        super().__init__()
        self.up = UpSample(dims, in_ch, out_ch, scale_factor=scale, mode="deconv")
        self.conv = nn.Sequential(
            Convolution(dims, out_ch + skip_ch, out_ch, kernel_size=3, act=act, norm=norm),
            Convolution(dims, out_ch, out_ch, kernel_size=3, act=act, norm=norm),
        )
        self.condition = condition

    def forward(self, x: torch.Tensor, skip: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        if torch.jit.is_scripting():  # exported models run without autocast
            x = self._up_and_convs(skip, x)
        else:
            x = self._eager_convs(x, skip)
        return self.condition(x, task)

    def _up_and_convs(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))

    @torch.jit.unused
    def _eager_convs(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # the convolutions run at the skip's depth
        return _run_3d_block(self._up_and_convs, [skip, x], [skip.shape[2]])


class _StaticHead(nn.Module):
    """A 1x1 convolution with the ``(x, task)`` signature of :class:`DynamicHead`; the task is not used."""

    def __init__(self, dims: int, in_ch: int, out_ch: int):
        super().__init__()
        if dims == 3:
            self.conv = ChannelMix3d(in_ch, out_ch)
        else:
            self.conv = Convolution(dims, in_ch, out_ch, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        return self.conv(x)


class SparseSSPNet(nn.Module):
    """
    SparseSSP network (ECCV 2024): predicts the full-resolution 3D volume of a structure from a transmitted-light
    stack that was acquired at every ``ratio``-th Z slice.

    One class covers the four topologies compared in the paper:

    - ``"3to2d"`` (the method): 3D convolutional encoder; every encoder level is folded depth-to-channel
      (``C x D x H x W -> (C*D) x H x W``) and projected to the 2D width of its level; a 2D UNet decoder; the last
      layer's channels unfold to depth.
    - ``"3d"``: 3D encoder and 3D decoder (a plain 3D UNet).
    - ``"2d"``: the input is folded depth-to-channel first; 2D encoder and 2D decoder.
    - ``"2to3d"``: 2D encoder on the folded input; each level unfolds channel-to-depth into a 3D decoder.

    Z-mapping:

    - ``"prefix"``: the input is already on the full grid (see ``PrefixResampleZ``): ``(B, C_in, depth, H, W)``.
    - ``"suffix"``: the input is the sparse stack ``(B, C_in, depth // ratio, H, W)``; the network runs at sparse
      depth and a learned transposed convolution (kernel and stride ``ratio`` in Z) upsamples at the output.

    Task conditioning (``num_tasks > 0``): one model for many structures, with a task id per sample:
    ``"film"`` scales and shifts every decoder level per task; ``"dynamic"`` is a DoDNet-style dynamic head whose
    1x1 convolution weights are generated per sample from the task and the pooled features.

    Output: ``(B, out_channels, depth, H, W)`` for both z-mappings. ``H`` and ``W`` must be divisible by
    ``2 ** (levels - 1)``; the depth is fixed at construction where depth is folded into channels.

    Args:
        depth: depth ``D`` of the full-grid patch (e.g. 32).
        in_channels: input channels (1 for a transmitted-light stack).
        out_channels: output channels (1 fluorescence channel).
        topology: ``"3to2d"``, ``"3d"``, ``"2d"`` or ``"2to3d"``.
        z_mapping: ``"prefix"`` or ``"suffix"``.
        ratio: acquisition ratio, used by the suffix z-mapping only.
        embedding: ``"3d"`` (project per slice, then fold) or ``"2d"`` (fold, then project), for mixed topologies.
        features_3d: widths of the 3D levels (encoder of 3d/3to2d, decoder of 3d/2to3d).
        features_2d: widths of the 2D levels (decoder of 2d/3to2d, encoder of 2d/2to3d); same length.
        num_tasks: number of structures for task conditioning; 0 disables it.
        conditioning: ``"film"`` or ``"dynamic"``.
        act: activation, as in :class:`monai.networks.blocks.Convolution`.
        norm: normalisation, as in :class:`monai.networks.blocks.Convolution`.
        suffix_channels: channels fed to the transposed convolution of the suffix z-mapping.

    Example::

        net = SparseSSPNet(depth=32, num_tasks=12)
        pred = net(torch.rand(2, 1, 32, 128, 128), task=torch.tensor([0, 5]))  # (2, 1, 32, 128, 128)
    """

    def __init__(
        self,
        depth: int = 32,
        in_channels: int = 1,
        out_channels: int = 1,
        topology: str = "3to2d",
        z_mapping: str = "prefix",
        ratio: int = 4,
        embedding: str = "3d",
        features_3d: Sequence[int] = (16, 32, 64, 128),
        features_2d: Sequence[int] = (32, 64, 128, 256),
        num_tasks: int = 0,
        conditioning: str = "film",
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.1, "inplace": True}),
        norm: tuple | str = ("instance", {"affine": True}),
        suffix_channels: int = 8,
    ) -> None:
        super().__init__()
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {tuple(TOPOLOGIES)}, got {topology!r}.")
        if z_mapping not in ("prefix", "suffix"):
            raise ValueError(f"z_mapping must be 'prefix' or 'suffix', got {z_mapping!r}.")
        if conditioning not in ("film", "dynamic"):
            raise ValueError(f"conditioning must be 'film' or 'dynamic', got {conditioning!r}.")
        if len(features_3d) != len(features_2d) or len(features_3d) < 2:
            raise ValueError("features_3d and features_2d must have the same length, at least 2 levels.")
        if int(ratio) < 1:
            raise ValueError(f"ratio must be a positive integer, got {ratio}.")
        if z_mapping == "suffix" and depth % ratio:
            raise ValueError(f"suffix z-mapping needs depth ({depth}) divisible by the ratio ({ratio}).")
        if num_tasks < 0:
            raise ValueError(f"num_tasks must be >= 0, got {num_tasks}.")

        self.depth = int(depth)
        self.topology = topology
        self.z_mapping = z_mapping
        self.ratio = int(ratio) if z_mapping == "suffix" else 1
        self.num_tasks = int(num_tasks)
        self.levels = len(features_3d)
        self.in_depth = self.depth // self.ratio
        enc_dims, dec_dims = TOPOLOGIES[topology]
        self.folds_input = enc_dims == 2
        self.uses_folding = topology != "3d"

        # Z size of every level: 3D stages halve Z while they can; 2D stages carry depth in channels
        zs = z_strides(self.in_depth, self.levels)
        depths = [self.in_depth]
        for s in zs:
            depths.append(depths[-1] // s)

        def scale(dims: int, level: int) -> list[int]:
            return [zs[level], 2, 2] if dims == 3 else [2, 2]

        enc_widths = list(features_3d if enc_dims == 3 else features_2d)
        dec_widths = list(features_3d if dec_dims == 3 else features_2d)
        enc_in = in_channels * self.in_depth if self.folds_input else in_channels
        self.fold_input = DepthToChannel() if self.folds_input else nn.Identity()

        self.encoder = nn.ModuleList()
        for level, width in enumerate(enc_widths):
            prev = enc_in if level == 0 else enc_widths[level - 1]
            stride = scale(enc_dims, level - 1) if level > 0 else 1
            self.encoder.append(_EncoderLevel(enc_dims, prev, width, stride, act, norm, stem=level == 0))

        # bridges turn each encoder level into the decoder's dimensionality
        self.bridges = nn.ModuleList()
        skip_widths = []
        for level in range(self.levels):
            if enc_dims == 3 and dec_dims == 2:
                bridge = Fold3dTo2d(enc_widths[level], depths[level], dec_widths[level], embedding, act, norm)
                skip_widths.append(bridge.out_channels)
            elif enc_dims == 2 and dec_dims == 3:
                bridge = Unfold2dTo3d(enc_widths[level], depths[level], dec_widths[level], embedding, act, norm)
                skip_widths.append(bridge.out_channels)
            else:
                bridge = nn.Identity()
                skip_widths.append(enc_widths[level])
            self.bridges.append(bridge)

        def condition(width: int) -> nn.Module:
            use_film = self.num_tasks > 0 and conditioning == "film"
            return TaskFiLM(self.num_tasks, width) if use_film else NoCondition()

        self.bottleneck = Convolution(dec_dims, skip_widths[-1], dec_widths[-1], kernel_size=3, act=act, norm=norm)
        self.bottleneck_condition = condition(dec_widths[-1])
        self.decoder = nn.ModuleList()
        for level in range(self.levels - 2, -1, -1):
            self.decoder.append(
                _DecoderLevel(
                    dec_dims,
                    dec_widths[level + 1],
                    skip_widths[level],
                    dec_widths[level],
                    scale(dec_dims, level),
                    act,
                    norm,
                    condition(dec_widths[level]),
                )
            )

        # output head: per-voxel channels; a 2D decoder's channels carry depth and unfold to it
        head_ch = suffix_channels if z_mapping == "suffix" else out_channels
        head_out = head_ch * self.in_depth if dec_dims == 2 else head_ch
        self.dynamic = self.num_tasks > 0 and conditioning == "dynamic"
        if self.dynamic:
            self.head = DynamicHead(dec_dims, dec_widths[0], head_out, self.num_tasks)
        else:
            self.head = _StaticHead(dec_dims, dec_widths[0], head_out)
        self.unfold_output = ChannelToDepth(self.in_depth) if dec_dims == 2 else nn.Identity()
        if z_mapping == "suffix":
            kernel = (self.ratio, 1, 1)
            self.z_upsample = nn.ConvTranspose3d(head_ch, out_channels, kernel_size=kernel, stride=kernel)
        else:
            self.z_upsample = nn.Identity()
        self.multiple = 2 ** (self.levels - 1)

    def _check_inputs(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor | None:
        if x.ndim != 5:
            raise ValueError(f"input must be (B, C, D, H, W), got {x.ndim} dimensions.")
        if self.uses_folding and x.shape[2] != self.in_depth:
            raise ValueError(
                f"input depth {x.shape[2]} does not match the network's depth {self.in_depth} "
                f"(depth={self.depth}, z_mapping={self.z_mapping}, ratio={self.ratio})."
            )
        if x.shape[3] % self.multiple or x.shape[4] % self.multiple:
            raise ValueError(f"H and W ({x.shape[3]}, {x.shape[4]}) must be divisible by {self.multiple}.")
        if self.num_tasks == 0:
            if task is not None:
                raise ValueError("this network has no task conditioning (num_tasks=0) but a task was given.")
            return None
        if task is None:
            raise ValueError(f"this network is conditioned on {self.num_tasks} tasks: pass task ids.")
        task = task.reshape(-1).long()
        if task.shape[0] == 1 and x.shape[0] > 1:
            # one structure for all windows of a sliding-window batch
            task = task.expand(x.shape[0])
        if task.shape[0] != x.shape[0]:
            raise ValueError(f"got {task.shape[0]} task ids for a batch of {x.shape[0]}.")
        if bool((task < 0).any()) or bool((task >= self.num_tasks).any()):
            raise ValueError(f"task ids must be in [0, {self.num_tasks}).")
        return task

    @torch.jit.unused
    def _eager_bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return _run_3d_block(self.bottleneck, [x], [x.shape[2]])

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ``(B, out_channels, depth, H, W)`` from ``x`` and the optional task ids ``(B,)`` (or ``(1,)``)."""
        task = self._check_inputs(x, task)
        h = self.fold_input(x)
        skips: list[torch.Tensor] = []
        for encode, bridge in zip(self.encoder, self.bridges):
            h = encode(h)
            skips.append(bridge(h))
        if torch.jit.is_scripting():  # exported models run without autocast
            y = self.bottleneck(skips[-1])
        else:
            y = self._eager_bottleneck(skips[-1])
        y = self.bottleneck_condition(y, task)
        for i, decode in enumerate(self.decoder):
            y = decode(y, skips[self.levels - 2 - i], task)
        y = self.head(y, task)
        return self.z_upsample(self.unfold_output(y))
