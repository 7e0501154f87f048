"""The engines' inferers: slab-wise Gaussian sliding windows give MONAI's result; autocast wraps any inferer; test-time
flips average the mirrored predictions."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import dense_patch_slices
from monai.inferers import SlidingWindowInferer

from sparsessp_monai.engines import AutocastInferer, FlipAveragingInferer, SlabSlidingWindowInferer
from sparsessp_monai.engines.inferers import window_starts


def _net(out_channels: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    # zero padding makes every window's border differ from its interior, so the blending weights matter
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, out_channels, 3, padding=1)
    ).eval()


@pytest.mark.parametrize(
    "shape, roi, overlap, sw_batch_size, mode",
    [
        ((1, 1, 50, 40, 36), (16, 16, 16), 0.25, 2, "gaussian"),  # last window flush with the end on every axis
        ((2, 1, 37, 23, 40), (8, 16, 16), (0.5, 0.25, 0.25), 3, "gaussian"),  # two images, overlap per axis
        ((1, 1, 45, 32, 32), (16, 16, 16), 0.25, 1, "constant"),
        ((1, 1, 16, 20, 20), (16, 16, 16), 0.25, 2, "gaussian"),  # one depth position: MONAI's inferer itself
        ((1, 1, 40, 12, 20), (16, 16, 16), 0.25, 1, "gaussian"),  # in-plane padding needed: MONAI's inferer
    ],
)
def test_slab_inferer_gives_monai_sliding_window_result(shape, roi, overlap, sw_batch_size, mode) -> None:
    net = _net()
    x = MetaTensor(torch.randn(shape), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    with torch.no_grad():
        ref = SlidingWindowInferer(list(roi), sw_batch_size, overlap, mode=mode)(x, net)
        got = SlabSlidingWindowInferer(roi, sw_batch_size, overlap, mode=mode)(x, net)
    assert isinstance(got, MetaTensor) and got.shape == ref.shape
    torch.testing.assert_close(got.as_tensor(), ref.as_tensor(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.affine, x.affine)


def test_slab_inferer_passes_arguments_and_works_under_autocast(capsys: pytest.CaptureFixture) -> None:
    calls = []

    def network(window: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        calls.append(window.shape[0])
        return window * task

    x = torch.rand(1, 1, 40, 32, 32)
    task = torch.tensor(3.0)
    slab = SlabSlidingWindowInferer((16, 16, 16), sw_batch_size=3, progress=True)
    out = AutocastInferer(slab, enabled=True)(x, network, task)
    # a voxel-wise network: every window agrees, so the blend is the network's output whatever the weights
    torch.testing.assert_close(out, 3 * x, atol=0.05, rtol=0.02)  # bf16 inside the windows
    assert out.dtype == torch.float32 and max(calls) == 3
    assert "27/27" in capsys.readouterr().err  # one progress bar over 3 x 3 x 3 windows


def test_window_starts_match_monai() -> None:
    for size, roi, overlap in [(128, 32, 0.25), (1024, 128, 0.25), (50, 16, 0.25), (37, 8, 0.5), (33, 32, 0.25)]:
        interval = max(int(roi * (1 - overlap)), 1)
        monai = sorted({s[0].start for s in dense_patch_slices((size,), (roi,), (interval,))})
        assert window_starts(size, roi, overlap) == monai


def test_slab_inferer_refuses_bad_arguments_and_resampling_networks() -> None:
    with pytest.raises(ValueError, match="3 entries"):
        SlabSlidingWindowInferer((16, 16))
    with pytest.raises(ValueError, match="overlap"):
        SlabSlidingWindowInferer((16, 16, 16), overlap=1.0)
    with pytest.raises(ValueError, match="B, C, D, H, W"):
        SlabSlidingWindowInferer((4, 4, 4))(torch.zeros(1, 8, 8, 8), _net())
    halve = torch.nn.AvgPool3d((2, 1, 1))
    with pytest.raises(ValueError, match="output grid of the input"):
        SlabSlidingWindowInferer((8, 8, 8))(torch.zeros(1, 1, 20, 8, 8), halve)


def test_flip_averaging_is_the_mean_of_the_mirrored_predictions_flipped_back() -> None:
    net = _net(out_channels=1)
    x = MetaTensor(torch.randn(1, 1, 20, 18, 22), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    sliding = SlidingWindowInferer([8, 16, 16], 2, 0.25, mode="gaussian")
    mirrors = [[], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]]
    with torch.no_grad():
        got = FlipAveragingInferer(sliding, [0, 1, 2])(x, net)
        ref = sum(sliding(x.flip(d), net).flip(d) if d else sliding(x, net) for d in mirrors) / len(mirrors)
        plain = FlipAveragingInferer(sliding, [])(x, net)
        depth_only = FlipAveragingInferer(sliding, [0])(x, net)
    assert isinstance(got, MetaTensor) and got.shape == x.shape
    torch.testing.assert_close(got.affine, x.affine)
    torch.testing.assert_close(got.as_tensor(), ref.as_tensor(), atol=1e-5, rtol=1e-5)
    # the zero-padded convolutions are not flip-equivariant: the mean differs from one pass
    assert float((got - plain).abs().max()) > 1e-3
    torch.testing.assert_close(plain.as_tensor(), sliding(x, net).as_tensor())
    torch.testing.assert_close(
        depth_only.as_tensor(), ((sliding(x, net) + sliding(x.flip(2), net).flip(2)) / 2).as_tensor()
    )
    with pytest.raises(ValueError, match="distinct"):
        FlipAveragingInferer(sliding, [0, 0])
    with pytest.raises(ValueError, match="spatial_axes"):
        FlipAveragingInferer(sliding, [3])(x, net)
