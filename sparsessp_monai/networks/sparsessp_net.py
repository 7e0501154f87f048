"""SparseSSPNet: mixed-dimension UNet that predicts a full 3D volume from a (prefix-resampled) sparse Z stack."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

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

__all__ = ["TOPOLOGIES", "SparseSSPNet", "level_depths", "z_strides"]

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


def level_depths(depth: int, levels: int) -> list[int]:
    """Depth ``D_l`` of every level for an input of depth ``depth``: ``D_0 = depth``, then the :func:`z_strides`."""
    depths = [int(depth)]
    for s in z_strides(depth, levels):
        depths.append(depths[-1] // s)
    return depths


def _check_arguments(
    depth: int,
    topology: str,
    z_mapping: str,
    ratio: int,
    features_3d: Sequence[int],
    features_2d: Sequence[int],
    num_tasks: int,
    conditioning: str,
    default_task: int | None = None,
) -> None:
    """Raise ``ValueError`` for an argument combination :class:`SparseSSPNet` cannot build."""
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
    if default_task is not None and not 0 <= int(default_task) < num_tasks:
        raise ValueError(f"default_task must be a task id in [0, {num_tasks}) or None, got {default_task}.")


class _EncoderLevel(Fp32AtDepth2, nn.Module):
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
        return self.guarded([x])

    def run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.block(inputs[0])

    def conv_depths(self, inputs: list[torch.Tensor]) -> list[int]:
        # the strided convolution sees the input's depth, the second one the strided depth
        return [inputs[0].shape[2], -(-inputs[0].shape[2] // self.z_stride)]


class _Bottleneck(Fp32AtDepth2, Convolution):
    """The 3x3(x3) convolution between encoder and decoder (a :class:`Convolution`, same weights layout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.guarded([x])

    def run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        y = inputs[0]
        for layer in self:  # what Convolution's own forward (nn.Sequential's) does
            y = layer(y)
        return y

    def conv_depths(self, inputs: list[torch.Tensor]) -> list[int]:
        return [inputs[0].shape[2]]


class _DecoderLevel(Fp32AtDepth2, nn.Module):
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
        return self.condition(self.guarded([skip, x]), task)

    def run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        skip, x = inputs[0], inputs[1]
        return self.conv(torch.cat([self.up(x), skip], dim=1))

    def conv_depths(self, inputs: list[torch.Tensor]) -> list[int]:
        # the convolutions run at the skip's depth
        return [inputs[0].shape[2]]


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

    - ``"prefix"``: the input is already on the full grid (see ``PrefixResampleZ``): ``D_in = depth``.
    - ``"suffix"``: the input is the sparse stack, ``D_in = depth // ratio``; the network runs at sparse depth and
      a learned transposed convolution (kernel and stride ``ratio`` in Z) upsamples at the output.

    Task conditioning (``num_tasks > 0``): one model for many structures, with a task id per sample:
    ``"film"`` scales and shifts every decoder level per task; ``"dynamic"`` is a DoDNet-style dynamic head whose
    1x1 convolution weights are generated per sample from the task and the pooled features.

    Shapes, with ``L = len(features_3d)`` levels, ``H_l, W_l = H / 2**l, W / 2**l``, level depths
    ``D_0 = D_in`` then halved while even and at least 4 (:func:`level_depths`), ``F3_l, F2_l`` the widths of
    ``features_3d, features_2d`` and ``C_h`` = ``out_channels`` (prefix) or ``suffix_channels`` (suffix):

    - input ``x``: ``(B, in_channels, D_in, H, W)`` for every topology; ``task``: ``(B,)`` or ``(1,)`` ids.
    - ``"3d"``: levels ``(B, F3_l, D_l, H_l, W_l)`` in encoder and decoder; head ``(B, C_h, D_in, H, W)``.
    - ``"3to2d"``: 3D encoder levels ``(B, F3_l, D_l, H_l, W_l)``, bridged to ``(B, S_l, H_l, W_l)`` with
      ``S_l = ceil(F2_l / D_l) * D_l`` (``embedding="3d"``) or ``F2_l`` (``"2d"``); 2D decoder levels
      ``(B, F2_l, H_l, W_l)``; head ``(B, C_h * D_in, H, W)``, unfolded to ``(B, C_h, D_in, H, W)``; with
      ``z_context = (c, ...)`` the 2D head gives ``(B, c * D_in, H, W)``, unfolded and refined in 3D at full
      resolution ``(B, w, D_in, H, W)`` before the head.
    - ``"2d"``: input folded to ``(B, in_channels * D_in, H, W)``; levels ``(B, F2_l, H_l, W_l)``; head as 3to2d.
    - ``"2to3d"``: input folded as 2d; 2D encoder levels ``(B, F2_l, H_l, W_l)``, bridged to
      ``(B, F3_l, D_l, H_l, W_l)``; 3D decoder levels ``(B, F3_l, D_l, H_l, W_l)``; head ``(B, C_h, D_in, H, W)``.
    - output: ``(B, out_channels, depth, H, W)`` for every topology and both z-mappings (suffix: the head's
      ``(B, suffix_channels, depth // ratio, H, W)`` through the transposed convolution).

    ``H`` and ``W`` must be divisible by ``2 ** (L - 1)``; ``D_in`` is fixed at construction for the topologies
    that fold depth into channels (all but ``"3d"``).

    The builder methods (``get_encoder``, ``get_bridges``, ``get_bottleneck``, ``get_decoder``, ``get_head``, ...)
    follow :class:`monai.networks.nets.DynUNet`; the 3D stages leave bf16 where CPU autocast meets depth 2
    (:class:`~sparsessp_monai.networks.blocks.Fp32AtDepth2`).

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
        default_task: task id used for every sample when ``forward`` gets no ``task`` (a conditioned network then
            runs on the image alone, as MONAI's ``verify_net_in_out``, ``ckpt_export`` and single-input callers
            call it); ``None`` (default) requires task ids. Must be in ``[0, num_tasks)``; not stored in the
            ``state_dict``.
        z_context: 3to2d only: ``(c, w_1, ..., w_n)`` adds a full-resolution 3D stage (:meth:`get_z_context`): the
            2D decoder ends in ``c`` channels per output slice, unfolded to ``(B, c, D_in, H, W)`` and concatenated
            with the first 3D encoder level, then 3x3x3 convolutions of widths ``w_1 .. w_n`` (one of width ``c``
            when ``n = 0``) and the head. Empty (default): the 2D head unfolds straight to the output.
        bridge_kernel: 3to2d / 2to3d: odd in-plane kernel size of the bridges' projections (:class:`~sparsessp_monai.
            networks.blocks.Fold3dTo2d`); 1 (default) projects per pixel, 5 is the authors' 3->2D choice.

    Example::

        net = SparseSSPNet(depth=32, num_tasks=12)
        pred = net(torch.rand(2, 1, 32, 128, 128), task=torch.tensor([0, 5]))  # (2, 1, 32, 128, 128)
        dna = SparseSSPNet(depth=32, num_tasks=12, default_task=0)
        pred = dna(torch.rand(2, 1, 32, 128, 128))  # task 0 for both samples
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
        default_task: int | None = None,
        z_context: Sequence[int] = (),
        bridge_kernel: int = 1,
    ) -> None:
        super().__init__()
        _check_arguments(
            depth, topology, z_mapping, ratio, features_3d, features_2d, num_tasks, conditioning, default_task
        )
        self.z_context = [int(w) for w in z_context]
        if self.z_context and (topology != "3to2d" or min(self.z_context) < 1):
            raise ValueError(f"z_context needs topology '3to2d' and positive widths, got {topology!r}, {z_context}.")
        self.depth = int(depth)
        self.topology = topology
        self.z_mapping = z_mapping
        self.ratio = int(ratio) if z_mapping == "suffix" else 1
        self.num_tasks = int(num_tasks)
        # a plain attribute, not a buffer, so checkpoints keep their keys
        self.default_task = None if default_task is None else int(default_task)
        self.conditioning = conditioning
        self.embedding = embedding
        self.in_channels, self.out_channels = in_channels, out_channels
        # C_h: channels per voxel out of the head, before the suffix z-mapping
        self.head_channels = suffix_channels if z_mapping == "suffix" else out_channels
        self.act, self.norm = act, norm
        self.bridge_kernel = bridge_kernel
        self.levels = len(features_3d)
        self.in_depth = self.depth // self.ratio
        self.enc_dims, self.dec_dims = TOPOLOGIES[topology]
        self.folds_input = self.enc_dims == 2
        self.uses_folding = topology != "3d"
        self.dynamic = self.num_tasks > 0 and conditioning == "dynamic"
        self.multiple = 2 ** (self.levels - 1)
        # Z size of every level: 3D stages halve Z while they can; 2D stages carry depth in channels
        self.level_z_strides = z_strides(self.in_depth, self.levels)
        self.level_depths = level_depths(self.in_depth, self.levels)
        self.enc_widths = list(features_3d if self.enc_dims == 3 else features_2d)
        self.dec_widths = list(features_3d if self.dec_dims == 3 else features_2d)

        # built in this order: it fixes the parameter order and which random numbers initialise which weights
        self.fold_input = DepthToChannel() if self.folds_input else nn.Identity()
        self.encoder = self.get_encoder()
        self.bridges = self.get_bridges()
        # identity bridges keep the encoder's width
        self.skip_widths = [getattr(b, "out_channels", w) for b, w in zip(self.bridges, self.enc_widths)]
        self.bottleneck = self.get_bottleneck()
        self.bottleneck_condition = self.get_condition(self.dec_widths[-1])
        self.decoder = self.get_decoder()
        self.head = self.get_head()
        # a 2D decoder's output channels carry depth and unfold to it
        self.unfold_output = ChannelToDepth(self.in_depth) if self.dec_dims == 2 else nn.Identity()
        self.z_upsample = self.get_z_upsample()
        # built last, and without parameters when off: the default network keeps its keys and its initialisation
        self.z_refine = self.get_z_context()

    def level_scale(self, dims: int, level: int) -> list[int]:
        """Stride between ``level`` and ``level + 1`` of a ``dims``-D stage: Z as :func:`z_strides`, H and W 2."""
        return [self.level_z_strides[level], 2, 2] if dims == 3 else [2, 2]

    def get_encoder(self) -> nn.ModuleList:
        """Encoder levels: ``(B, C, ...)`` at level ``l - 1`` -> ``(B, enc_widths[l], ...)`` at level ``l``."""
        enc_in = self.in_channels * self.in_depth if self.folds_input else self.in_channels
        encoder = nn.ModuleList()
        for level, width in enumerate(self.enc_widths):
            prev = enc_in if level == 0 else self.enc_widths[level - 1]
            stride = self.level_scale(self.enc_dims, level - 1) if level > 0 else 1
            encoder.append(_EncoderLevel(self.enc_dims, prev, width, stride, self.act, self.norm, stem=level == 0))
        return encoder

    def get_bridges(self) -> nn.ModuleList:
        """One bridge per level from the encoder's to the decoder's dimensionality (identity for 3d and 2d)."""
        bridges = nn.ModuleList()
        for level, (width, depth) in enumerate(zip(self.enc_widths, self.level_depths)):
            if self.enc_dims == 3 and self.dec_dims == 2:
                bridge = Fold3dTo2d(width, depth, self.dec_widths[level], self.embedding, self.act, self.norm,
                                    self.bridge_kernel)
            elif self.enc_dims == 2 and self.dec_dims == 3:
                bridge = Unfold2dTo3d(width, depth, self.dec_widths[level], self.embedding, self.act, self.norm,
                                      self.bridge_kernel)
            else:
                bridge = nn.Identity()
            bridges.append(bridge)
        return bridges

    def get_bottleneck(self) -> nn.Module:
        """A 3x3(x3) convolution on the deepest bridged level, ``skip_widths[-1] -> dec_widths[-1]`` channels."""
        return _Bottleneck(
            self.dec_dims, self.skip_widths[-1], self.dec_widths[-1], kernel_size=3, act=self.act, norm=self.norm
        )

    def get_condition(self, width: int) -> nn.Module:
        """Task conditioning of a decoder level of ``width`` channels: FiLM, or nothing (``NoCondition``)."""
        use_film = self.num_tasks > 0 and self.conditioning == "film"
        return TaskFiLM(self.num_tasks, width) if use_film else NoCondition()

    def get_decoder(self) -> nn.ModuleList:
        """Decoder levels, deepest first: level ``l + 1`` and skip ``l`` -> ``(B, dec_widths[l], ...)``."""
        decoder = nn.ModuleList()
        for level in range(self.levels - 2, -1, -1):
            condition = self.get_condition(self.dec_widths[level])  # before the level: initialisation order
            in_ch, out_ch = self.dec_widths[level + 1], self.dec_widths[level]
            scale = self.level_scale(self.dec_dims, level)
            decoder.append(
                _DecoderLevel(
                    self.dec_dims, in_ch, self.skip_widths[level], out_ch, scale, self.act, self.norm, condition
                )
            )
        return decoder

    def get_head(self) -> nn.Module:
        """Per-voxel output channels (``C_h``, times ``D_in`` for a 2D decoder): dynamic or static 1x1 convolution.
        With ``z_context``, a static 1x1 projection to ``z_context[0]`` channels per slice instead."""
        if self.z_context:
            return _StaticHead(2, self.dec_widths[0], self.z_context[0] * self.in_depth)
        head_out = self.head_channels * self.in_depth if self.dec_dims == 2 else self.head_channels
        if self.dynamic:
            return DynamicHead(self.dec_dims, self.dec_widths[0], head_out, self.num_tasks)
        return _StaticHead(self.dec_dims, self.dec_widths[0], head_out)

    def get_z_context(self) -> nn.Module:
        """
        Full-resolution 3D stage of a 3to2d network (:class:`ZContext`) for ``z_context``; without it, a module
        that returns the unfolded output unchanged.
        """
        if not self.z_context:
            return NoZContext()
        if self.dynamic:
            head: nn.Module = DynamicHead(3, self.z_context[-1], self.head_channels, self.num_tasks)
        else:
            head = _StaticHead(3, self.z_context[-1], self.head_channels)
        return ZContext(self.z_context, self.enc_widths[0], head, self.act, self.norm)

    def get_z_upsample(self) -> nn.Module:
        """Suffix z-mapping: ``(B, C_h, D_in, H, W) -> (B, out_channels, depth, H, W)``; identity for prefix."""
        if self.z_mapping != "suffix":
            return nn.Identity()
        kernel = (self.ratio, 1, 1)
        return nn.ConvTranspose3d(self.head_channels, self.out_channels, kernel_size=kernel, stride=kernel)

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
            default_task = self.default_task
            if default_task is None:
                raise ValueError(
                    f"this network is conditioned on {self.num_tasks} tasks: pass task ids (or build it with a "
                    "default_task)."
                )
            task = torch.full((1,), default_task, dtype=torch.long, device=x.device)
        task = task.reshape(-1).long()
        if task.shape[0] == 1 and x.shape[0] > 1:
            # one structure for all windows of a sliding-window batch
            task = task.expand(x.shape[0])
        if task.shape[0] != x.shape[0]:
            raise ValueError(f"got {task.shape[0]} task ids for a batch of {x.shape[0]}.")
        if bool((task < 0).any()) or bool((task >= self.num_tasks).any()):
            raise ValueError(f"task ids must be in [0, {self.num_tasks}).")
        return task

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ``(B, out_channels, depth, H, W)`` from ``x`` and the optional task ids ``(B,)`` (or ``(1,)``);
        without ``task``, a conditioned network uses its ``default_task``."""
        task = self._check_inputs(x, task)
        h = self.fold_input(x)
        skips: list[torch.Tensor] = []
        full_res, first = h, True
        for encode, bridge in zip(self.encoder, self.bridges):
            h = encode(h)
            if first:  # the first 3D level: what the optional full-resolution 3D stage gets as its skip
                full_res, first = h, False
            skips.append(bridge(h))
        y = self.bottleneck_condition(self.bottleneck(skips[-1]), task)
        for i, decode in enumerate(self.decoder):
            y = decode(y, skips[self.levels - 2 - i], task)
        y = self.z_refine(self.unfold_output(self.head(y, task)), full_res, task)
        return self.z_upsample(y)
