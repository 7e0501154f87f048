"""Building blocks of :class:`~sparsessp_monai.networks.SparseSSPNet`: dimension bridges, task conditioning and the
fp32 fallback of 3D blocks under CPU bf16 autocast."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution
from torch import nn

__all__ = [
    "ChannelMix3d",
    "ChannelToDepth",
    "DepthToChannel",
    "DynamicHead",
    "Fold3dTo2d",
    "Fp32AtDepth2",
    "NoCondition",
    "NoZContext",
    "TaskFiLM",
    "Unfold2dTo3d",
    "ZContext",
]


class DepthToChannel(nn.Module):
    """Fold depth into channels: ``(B, C, D, H, W) -> (B, C * D, H, W)`` (channel-major, depth-minor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1, 2)


class ChannelToDepth(nn.Module):
    """Unfold channels into depth: ``(B, C * D, H, W) -> (B, C, D, H, W)``, the inverse of :class:`DepthToChannel`.

    Args:
        depth: the depth ``D`` to unfold.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = int(depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1] // self.depth, self.depth, x.shape[2], x.shape[3])


class ChannelMix3d(nn.Module):
    """
    1x1x1 convolution of a 3D feature map written as a channel matmul, followed by MONAI's norm/act (``ADN``).

    PyTorch's CPU backend sends 1x1x1 ``Conv3d`` with few output channels to a slow generic kernel (about 20x slower
    than this einsum for ``16 -> 1`` channels at 32x128x128); the arithmetic is identical.

    Input ``(B, in_channels, D, H, W)``, output ``(B, out_channels, D, H, W)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        act, norm: as in :class:`monai.networks.blocks.Convolution`; ``None`` for a bare projection.
    """

    def __init__(self, in_channels: int, out_channels: int, act=None, norm=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # same initialisation as a 1x1x1 Conv3d (kaiming-uniform with a=sqrt(5) on fan_in = in_channels)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        bound = 1 / in_channels**0.5
        nn.init.uniform_(self.bias, -bound, bound)
        self.adn = ADN(ordering="NDA", in_channels=out_channels, act=act, norm=norm, norm_dim=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("oc,bcdhw->bodhw", self.weight, x) + self.bias.reshape(1, -1, 1, 1, 1)
        return self.adn(y)


def _bridge_kernel(kernel_size: int) -> int:
    """A bridge projection's in-plane kernel size: a positive odd integer ("same" padding)."""
    if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"bridge kernel size must be a positive odd integer, got {kernel_size!r}.")
    return int(kernel_size)


def _slice_projection(in_channels: int, out_channels: int, k: int, act, norm) -> nn.Module:
    """The 3D embedding's projection, shared by all slices: per voxel (:class:`ChannelMix3d`) or 1 x k x k."""
    if k == 1:
        return ChannelMix3d(in_channels, out_channels, act=act, norm=norm)
    return Convolution(3, in_channels, out_channels, kernel_size=(1, k, k), act=act, norm=norm)


class Fold3dTo2d(nn.Module):
    """
    Bridge a 3D feature map to a 2D one ("depth-to-channel" with an embedding to a common width).

    - ``embedding="3d"``: a 1x1x1 Conv3d projects ``C -> ceil(F / D)`` channels per slice, then depth is folded,
      giving ``ceil(F / D) * D`` channels; the projection is shared by all slices.
    - ``embedding="2d"``: depth is folded first (``C * D`` channels), then a 1x1 Conv2d projects to ``F``; the
      projection mixes slices.

    ``kernel_size`` k > 1 widens the projection in-plane: a k x k Conv2d for ``"2d"`` (the authors' 3->2D network
    uses 5 x 5), a 1 x k x k Conv3d for ``"3d"`` (still shared by all slices); "same" padding either way.

    Input ``(B, C, D, H, W)``, output ``(B, out_channels, H, W)``.

    Args:
        in_channels: ``C``.
        depth: ``D``.
        width: target width ``F``.
        embedding: ``"3d"`` or ``"2d"``.
        act, norm: as in :class:`monai.networks.blocks.Convolution`.
        kernel_size: odd in-plane kernel size of the projection (1: per pixel).
    """

    def __init__(self, in_channels: int, depth: int, width: int, embedding: str, act, norm,
                 kernel_size: int = 1) -> None:
        super().__init__()
        k = _bridge_kernel(kernel_size)
        if embedding == "3d":
            per_slice = max(1, -(-width // depth))
            self.project = nn.Sequential(_slice_projection(in_channels, per_slice, k, act, norm), DepthToChannel())
            self.out_channels = per_slice * depth
        elif embedding == "2d":
            self.project = nn.Sequential(
                DepthToChannel(), Convolution(2, in_channels * depth, width, kernel_size=k, act=act, norm=norm)
            )
            self.out_channels = width
        else:
            raise ValueError(f"embedding must be '3d' or '2d', got {embedding!r}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)


class Unfold2dTo3d(nn.Module):
    """
    Bridge a 2D feature map to a 3D one ("channel-to-depth" with an embedding), the mirror of :class:`Fold3dTo2d`.

    - ``embedding="2d"``: a 1x1 Conv2d projects ``C -> F * D`` channels, then they unfold to ``(F, D)``.
    - ``embedding="3d"``: channels unfold to ``(C / D, D)`` first (``C`` must be a multiple of ``D``), then a
      1x1x1 Conv3d projects to ``F``.

    ``kernel_size`` k > 1: a k x k Conv2d, or a 1 x k x k Conv3d, as in :class:`Fold3dTo2d`.

    Input ``(B, C, H, W)``, output ``(B, F, D, H, W)``.
    """

    def __init__(self, in_channels: int, depth: int, width: int, embedding: str, act, norm,
                 kernel_size: int = 1) -> None:
        super().__init__()
        k = _bridge_kernel(kernel_size)
        if embedding == "2d":
            self.project = nn.Sequential(
                Convolution(2, in_channels, width * depth, kernel_size=k, act=act, norm=norm), ChannelToDepth(depth)
            )
        elif embedding == "3d":
            if in_channels % depth:
                raise ValueError(
                    f"embedding='3d' unfolds {in_channels} channels into depth {depth}: channels must be a multiple "
                    "of the depth; change the 2D widths or use embedding='2d'."
                )
            self.project = nn.Sequential(
                ChannelToDepth(depth), _slice_projection(in_channels // depth, width, k, act, norm)
            )
        else:
            raise ValueError(f"embedding must be '3d' or '2d', got {embedding!r}.")
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)


class Fp32AtDepth2:
    """
    Mixin of the network's stages that runs a stage in fp32 where a 3D convolution of it meets depth 2 under CPU
    bf16 autocast; the one place of this workaround.

    PyTorch's CPU kernel (checked on 2.13) returns garbage weight gradients (up to 1e36, then inf) for a bf16 3x3x3
    ``Conv3d`` whose input has depth 2 and 32 or more channels. Other depths, the forward pass and CUDA are
    unaffected, so only such stages leave bf16.

    A stage (an ``nn.Module`` that also inherits this class) implements ``run(inputs)``, its computation on a list
    of tensors whose first one decides (5-D ``(B, C, D, H, W)`` on the CPU), and ``conv_depths(inputs)``, the depths
    its 3D convolutions see; its ``forward`` returns ``self.guarded(inputs)``. Scripted (exported) models run
    without autocast and call ``run`` directly.
    """

    def run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The stage's computation on ``inputs``."""
        raise NotImplementedError

    def conv_depths(self, inputs: list[torch.Tensor]) -> list[int]:
        """The depths the stage's 3D convolutions see for ``inputs`` (eager mode only)."""
        raise NotImplementedError

    def guarded(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """``run(inputs)``, in fp32 when ``needs_fp32(inputs)``."""
        if torch.jit.is_scripting():  # exported models run without autocast
            return self.run(inputs)
        return self._eager_guarded(inputs)

    @torch.jit.unused
    def _eager_guarded(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.needs_fp32(inputs):
            with torch.autocast("cpu", enabled=False):
                return self.run([t.float() for t in inputs])
        return self.run(inputs)

    @torch.jit.unused
    def needs_fp32(self, inputs: list[torch.Tensor]) -> bool:
        """Whether the stage must leave bf16: CPU, 3D, bf16 autocast on, and a 3D convolution at depth 2."""
        x = inputs[0]
        return (
            x.device.type == "cpu"
            and x.dim() == 5
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and 2 in self.conv_depths(inputs)
        )


class NoCondition(nn.Module):
    """Task conditioning that does nothing; keeps a uniform ``(x, task)`` call signature in the decoder."""

    def forward(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        return x


class TaskFiLM(nn.Module):
    """
    Feature-wise linear modulation by task: ``x * (1 + gamma[task]) + beta[task]`` per channel.

    Starts as the identity (zero-initialised table), so a multi-task model begins as a shared model and learns
    per-structure scales. Costs two multiply-adds per voxel, unlike per-sample convolutions.

    Args:
        num_tasks: number of structures.
        channels: channels of the modulated feature map ``(B, channels, *spatial)``.
    """

    def __init__(self, num_tasks: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.table = nn.Embedding(num_tasks, 2 * channels)
        nn.init.zeros_(self.table.weight)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        if task is None:
            return x
        gamma_beta = self.table(task)
        shape = [x.shape[0], 2 * self.channels] + [1] * (x.ndim - 2)
        gamma, beta = gamma_beta.reshape(shape).chunk(2, dim=1)
        return x * (1 + gamma) + beta


class DynamicHead(nn.Module):
    """
    DoDNet-style dynamic head: a controller turns (one-hot task, globally pooled features) into the weights of a
    small per-sample stack of 1x1 convolutions, applied at once to the whole batch as one grouped convolution.

    Input ``(B, in_channels, *spatial)`` and task ``(B,)``; output ``(B, out_channels, *spatial)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        num_tasks: number of structures.
        hidden: width of the two hidden dynamic layers.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_tasks: int, hidden: int = 8):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.num_tasks = num_tasks
        self.shapes = [(hidden, in_channels), (hidden, hidden), (out_channels, hidden)]
        num_params = sum(o * i + o for o, i in self.shapes)
        self.reduce = Convolution(spatial_dims, in_channels, in_channels, kernel_size=1, act="relu", norm=None)
        self.controller = nn.Linear(num_tasks + in_channels, num_params)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
        if self.spatial_dims == 3:
            return F.conv3d(x, weight.reshape(weight.shape[0], weight.shape[1], 1, 1, 1), bias, groups=groups)
        return F.conv2d(x, weight.reshape(weight.shape[0], weight.shape[1], 1, 1), bias, groups=groups)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        if task is None:
            raise ValueError("a dynamic head needs the task id of every sample.")
        b = x.shape[0]
        pooled = torch.flatten(F.adaptive_avg_pool1d(torch.flatten(x, 2), 1), 1)
        onehot = F.one_hot(task, self.num_tasks).to(x.dtype)
        params = self.controller(torch.cat([onehot, pooled], dim=1))
        y = self.reduce(x)
        y = torch.flatten(y, 0, 1).unsqueeze(0)  # the batch becomes conv groups
        start = 0
        for layer, (o, i) in enumerate(self.shapes):
            weight = params[:, start : start + o * i].reshape(b * o, i)
            start += o * i
            bias = params[:, start : start + o].reshape(b * o)
            start += o
            y = self._conv(y, weight, bias, b)
            if layer < len(self.shapes) - 1:
                y = F.relu(y)
        return y.squeeze(0).unflatten(0, [b, -1])


class ZContext(nn.Module):
    """
    ``(c, w_1, ..., w_n)``: the 2D decoder's ``c`` channels per slice ``(B, c, D, H, W)`` and the first 3D encoder
    level ``(B, F3_0, D, H, W)``, concatenated, then 3x3x3 convolutions of widths ``w_1 .. w_n`` (one of width ``c``
    when ``n = 0``) and ``head`` to the output channels.

    A 2D decoder has separate filters for every output slice; these layers share theirs along Z, as a 3D decoder
    does everywhere, at the cost of a few narrow 3D convolutions at full resolution.
    """

    def __init__(self, widths: Sequence[int], skip_channels: int, head: nn.Module, act, norm):
        super().__init__()
        outs = [*widths[1:]] or [widths[0]]
        ins = [widths[0] + skip_channels, *outs[:-1]]
        self.convs = nn.Sequential(
            *[Convolution(3, c_in, c_out, kernel_size=3, act=act, norm=norm) for c_in, c_out in zip(ins, outs)]
        )
        self.head = head

    def forward(self, x: torch.Tensor, skip: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.convs(torch.cat([x, skip], dim=1)), task)


class NoZContext(nn.Module):
    """No full-resolution 3D stage: returns the unfolded output as it is (no parameters, no state_dict keys)."""

    def forward(self, x: torch.Tensor, skip: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        return x
