"""SparseSSPNet: shape contracts, conditioning, gradients, TorchScript and input errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from sparsessp_monai.networks import TOPOLOGIES, ChannelMix3d, Fp32AtDepth2, SparseSSPNet
from sparsessp_monai.networks.sparsessp_net import level_depths, z_strides

SMALL = {"features_3d": (4, 8, 16), "features_2d": (16, 32, 64)}


def small_net(**kwargs) -> SparseSSPNet:
    torch.manual_seed(0)
    return SparseSSPNet(depth=kwargs.pop("depth", 16), **{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "topology,ratio,z_mapping", list(itertools.product(TOPOLOGIES, [1, 2, 4, 8], ["prefix", "suffix"]))
)
def test_output_is_the_full_grid_for_every_topology_ratio_and_z_mapping(topology, ratio, z_mapping) -> None:
    net = small_net(topology=topology, ratio=ratio, z_mapping=z_mapping)
    in_depth = 16 // ratio if z_mapping == "suffix" else 16
    with torch.no_grad():
        y = net(torch.randn(2, 1, in_depth, 16, 24))
    assert y.shape == (2, 1, 16, 16, 24)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("topology,embedding", list(itertools.product(["3to2d", "2to3d"], ["3d", "2d"])))
def test_both_embeddings_of_mixed_topologies(topology, embedding) -> None:
    net = small_net(topology=topology, embedding=embedding, out_channels=2)
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


@pytest.mark.parametrize("topology,embedding", list(itertools.product(["3to2d", "2to3d"], ["3d", "2d"])))
def test_bridge_kernel_widens_the_projection_in_plane_only(topology, embedding) -> None:
    """k x k bridges see a pixel's neighbours in-plane, never other slices (3D embedding: shared 1 x k x k)."""
    wide, narrow = small_net(topology=topology, embedding=embedding, bridge_kernel=5), small_net(
        topology=topology, embedding=embedding)
    convs = [m for b in wide.bridges for m in b.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(tuple(c.kernel_size[-2:]) == (5, 5) for c in convs)
    assert all(c.kernel_size[0] == 1 for c in convs if isinstance(c, torch.nn.Conv3d))
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    x = torch.randn(1, 1, 16, 16, 24, requires_grad=True)
    wide(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in wide.parameters())


@pytest.mark.parametrize("conditioning", ["film", "dynamic"])
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_task_conditioning_changes_outputs_and_gradients_reach_every_parameter(topology, conditioning) -> None:
    net = small_net(topology=topology, num_tasks=3, conditioning=conditioning)
    x = torch.randn(2, 1, 16, 16, 16)
    task = torch.tensor([0, 2])
    loss = net(x, task).square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"

    # FiLM starts as the identity; one optimisation step makes tasks differ
    torch.optim.SGD(net.parameters(), lr=0.5).step()
    net.eval()
    with torch.no_grad():
        same = x[:1].expand(3, -1, -1, -1, -1)
        y = net(same, torch.tensor([0, 1, 2]))
    assert not torch.allclose(y[0], y[2], atol=1e-5)
    # one task id serves a whole batch of windows
    with torch.no_grad():
        assert torch.allclose(net(same, torch.tensor([2])), net(same, torch.tensor([2, 2, 2])), atol=1e-6)


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
@pytest.mark.parametrize("z_mapping", ["prefix", "suffix"])
def test_torchscript_export_matches_eager(topology, z_mapping) -> None:
    net = small_net(topology=topology, z_mapping=z_mapping, num_tasks=2, conditioning="dynamic").eval()
    x = torch.randn(1, 1, 16 if z_mapping == "prefix" else 4, 16, 16)
    scripted = torch.jit.script(net)
    task = torch.tensor([1])
    with torch.no_grad():
        assert torch.allclose(scripted(x, task), net(x, task), atol=1e-5)


@pytest.mark.parametrize("conditioning", ["film", "dynamic"])
def test_default_task_lets_a_conditioned_network_run_on_the_image_alone(conditioning) -> None:
    net = small_net(num_tasks=3, conditioning=conditioning, default_task=2)
    # FiLM and the dynamic head start task-independent: one step makes the tasks differ
    net(torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 2])).square().mean().backward()
    torch.optim.SGD(net.parameters(), lr=0.5).step()
    net.eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        # no task: the default for every sample; explicit ids still win
        assert torch.allclose(net(x), net(x, torch.tensor([2, 2])), atol=1e-6)
        assert not torch.allclose(net(x), net(x, torch.tensor([0, 0])), atol=1e-5)
        scripted = torch.jit.script(net)
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
        assert torch.allclose(scripted(x, torch.tensor([1])), net(x, torch.tensor([1, 1])), atol=1e-5)
    # the default is not part of the weights: checkpoints load either way
    assert list(net.state_dict()) == list(small_net(num_tasks=3, conditioning=conditioning).state_dict())


def test_default_network_is_light() -> None:
    net = SparseSSPNet()
    assert sum(p.numel() for p in net.parameters()) < 5_000_000


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SparseSSPNet(topology="4d"), "topology"),
        (lambda: SparseSSPNet(z_mapping="middle"), "z_mapping"),
        (lambda: SparseSSPNet(conditioning="moe"), "conditioning"),
        (lambda: SparseSSPNet(features_3d=(8, 16), features_2d=(8, 16, 32)), "same length"),
        (lambda: SparseSSPNet(depth=30, z_mapping="suffix", ratio=4), "divisible"),
        (lambda: SparseSSPNet(embedding="1d"), "embedding"),
        (lambda: small_net(topology="2to3d", embedding="3d", features_2d=(6, 16, 32)), "multiple of the depth"),
        (lambda: small_net()(torch.randn(1, 1, 8, 16, 16)), "depth"),
        (lambda: small_net()(torch.randn(1, 16, 16, 16)), "dimensions"),
        (lambda: small_net()(torch.randn(1, 1, 16, 18, 16)), "divisible"),
        (lambda: small_net()(torch.randn(1, 1, 16, 16, 16), torch.tensor([0])), "no task conditioning"),
        (lambda: small_net(num_tasks=2)(torch.randn(1, 1, 16, 16, 16)), "task ids"),
        (lambda: small_net(num_tasks=2)(torch.randn(1, 1, 16, 16, 16), torch.tensor([2])), r"\[0, 2\)"),
        (lambda: small_net(num_tasks=2)(torch.randn(3, 1, 16, 16, 16), torch.tensor([0, 1])), "batch of 3"),
        (lambda: small_net(num_tasks=2, default_task=2), "default_task"),
        (lambda: small_net(default_task=0), "default_task"),
        (lambda: small_net(topology="3to2d", bridge_kernel=4), "positive odd integer"),
        (lambda: small_net(topology="2to3d", bridge_kernel=0), "positive odd integer"),
    ],
)
def test_bad_configurations_and_inputs_raise(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_channel_mix_equals_a_1x1x1_convolution() -> None:
    torch.manual_seed(0)
    mix = ChannelMix3d(16, 3)
    conv = torch.nn.Conv3d(16, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(mix.weight.reshape(3, 16, 1, 1, 1))
        conv.bias.copy_(mix.bias)
    x = torch.randn(2, 16, 4, 8, 8)
    assert torch.allclose(mix(x), conv(x), atol=1e-5)


def test_cpu_bf16_training_gradients_stay_finite_where_a_level_has_depth_2():
    # PyTorch's CPU bf16 Conv3d gives garbage weight gradients at depth 2; the suffix r=4 network meets depth 2
    # (8 -> 4 -> 2 -> 2) and must train like fp32 there
    torch.manual_seed(0)
    net = SparseSSPNet(depth=32, z_mapping="suffix", ratio=4, num_tasks=2)
    x, task = torch.randn(2, 1, 8, 64, 64), torch.tensor([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(x, task).float().square().mean()
    loss.backward()
    bf16 = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    net(x, task).square().mean().backward()
    for name, p in net.named_parameters():
        assert torch.isfinite(bf16[name]).all(), name
        # bf16 rounding is relative to the gradient's size; biases before a norm have ~zero gradient
        scale = p.grad.abs().max().clamp(min=1e-3)
        assert (bf16[name] - p.grad).abs().max() / scale < 0.25, name


class _Conv3dStage(Fp32AtDepth2, torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.guarded([x])

    def run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(inputs[0])

    def conv_depths(self, inputs: list[torch.Tensor]) -> list[int]:
        return [inputs[0].shape[2]]


def test_fp32_at_depth_2_leaves_bf16_only_where_a_3d_convolution_meets_depth_2() -> None:
    torch.manual_seed(0)
    stage = _Conv3dStage()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stage(torch.randn(1, 2, 2, 8, 8)).dtype == torch.float32
        assert stage(torch.randn(1, 2, 4, 8, 8)).dtype == torch.bfloat16
    x = torch.randn(1, 2, 2, 8, 8)
    # no autocast: nothing changes, and the scripted stage (exported models run without autocast) agrees
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(stage)(x), stage.conv(x), atol=1e-6)
        assert torch.equal(stage(x), stage.conv(x))


def test_level_depths_halve_while_even_and_at_least_two() -> None:
    assert z_strides(8, 4) == [2, 2, 1]
    assert level_depths(8, 4) == [8, 4, 2, 2]
    assert level_depths(32, 4) == [32, 16, 8, 4]
    assert level_depths(6, 3) == [6, 3, 3]
    assert level_depths(2, 3) == [2, 2, 2]


def test_checkpoint_layout_is_stable() -> None:
    # checkpoints of earlier versions load: the state_dict names of the default multi-task network are unchanged
    keys = list(SparseSSPNet(num_tasks=2).state_dict())
    assert len(keys) == 84
    for key in (
        "encoder.0.block.conv.weight",
        "encoder.1.block.0.adn.N.weight",
        "bridges.0.project.0.weight",
        "bottleneck.conv.weight",
        "bottleneck_condition.table.weight",
        "decoder.0.up.deconv.weight",
        "decoder.0.conv.1.conv.weight",
        "decoder.2.condition.table.weight",
        "head.conv.conv.weight",
    ):
        assert key in keys, key
    order = [keys.index(k) for k in ("bottleneck.conv.weight", "decoder.0.up.deconv.weight", "head.conv.conv.weight")]
    assert order == sorted(order)


@pytest.mark.parametrize("conditioning", ["film", "dynamic"])
@pytest.mark.parametrize("z_context", [(2,), (4, 8)])
def test_z_context_refines_the_full_grid_in_3d(z_context, conditioning) -> None:
    net = small_net(z_context=z_context, num_tasks=2, conditioning=conditioning)
    x, task = torch.randn(2, 1, 16, 16, 24), torch.tensor([0, 1])
    y = net(x, task)
    assert y.shape == (2, 1, 16, 16, 24)
    y.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"
    # the stage is 3D: its filters are shared along Z
    convs = [m for m in net.z_refine.convs.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == max(1, len(z_context) - 1)
    # the 2D head gives c channels per slice
    assert net.head.conv.out_channels == z_context[0] * 16
    scripted = torch.jit.script(net.eval())
    with torch.no_grad():
        assert torch.allclose(scripted(x, task), net(x, task), atol=1e-5)


def test_z_context_is_off_by_default_and_leaves_the_checkpoint_layout() -> None:
    plain, ctx = small_net(), small_net(z_context=(4,))
    assert not any(k.startswith("z_refine") for k in plain.state_dict())
    extra = set(ctx.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("z_refine.") for k in extra)
    with pytest.raises(ValueError, match="z_context"):
        small_net(topology="3d", z_context=(4,))


@pytest.mark.parametrize("topology", ["3d", "3to2d"])
def test_channels_last_3d_keeps_values_and_checkpoints(topology) -> None:
    from sparsessp_monai.networks import channels_last_3d

    plain, fast = small_net(topology=topology, num_tasks=2), channels_last_3d(small_net(topology=topology, num_tasks=2))
    five_d = [p for p in fast.parameters() if p.ndim == 5]
    assert five_d and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in five_d)
    x, task = torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 1])
    assert torch.allclose(plain(x, task), fast(x, task), atol=1e-5)
    # a checkpoint of one loads into the other, and the layout survives loading
    fast.load_state_dict(plain.state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in fast.parameters() if p.ndim == 5)
    assert set(fast.state_dict()) == set(plain.state_dict())
    (fast(x, task).square().mean()).backward()
    assert all(p.grad is not None for p in five_d)
