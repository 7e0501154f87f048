"""Sparse-Z transforms: subsampling, prefix resampling, metadata, dictionary versions and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose

from sparsessp_monai.transforms import (
    SPARSE_Z_KEY,
    PrefixResampleZ,
    PrefixResampleZd,
    RandSubsampleZd,
    SubsampleZ,
    SubsampleZd,
    ratio_from_z_steps,
)


def volume(depth: int = 32, axis: int = 0, seed: int = 0) -> MetaTensor:
    shape = [3, 6, 5]
    shape[axis] = depth
    g = torch.Generator().manual_seed(seed)
    affine = torch.diag(torch.tensor([0.29, 0.108, 0.108, 1.0], dtype=torch.float64))
    return MetaTensor(torch.randn(2, *shape, generator=g), affine=affine)


@pytest.mark.parametrize("ratio", [1, 2, 4, 8])
@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("mode", ["nearest", "trilinear"])
def test_round_trip_keeps_acquired_slices_bit_exact(ratio: int, axis: int, mode: str) -> None:
    for depth in (32, 30):
        x = volume(depth, axis)
        for offset in range(ratio):
            sparse = SubsampleZ(ratio, offset, axis=axis)(x)
            full = PrefixResampleZ(mode)(sparse)
            assert full.shape == x.shape
            kept = list(range(offset, depth, ratio))
            assert sparse.shape[axis + 1] == len(kept)
            assert torch.equal(
                full.index_select(axis + 1, torch.tensor(kept)), x.index_select(axis + 1, torch.tensor(kept))
            )
            # the rebuilt grid is the original grid again
            assert torch.allclose(full.affine, x.affine)
            assert SPARSE_Z_KEY not in full.meta
            assert full.meta["sparse_z_ratio"] == ratio and full.meta["sparse_z_offset"] == offset


def test_subsample_records_placement_and_sparse_affine() -> None:
    x = volume(32)
    sparse = SubsampleZ(4, offset=3)(x)
    info = sparse.meta[SPARSE_Z_KEY]
    assert info == {"ratio": 4, "offset": 3, "indices": (3, 7, 11, 15, 19, 23, 27, 31), "full_depth": 32, "axis": 0}
    # voxel k of the sparse grid sits where voxel 3 + 4k of the full grid was
    assert sparse.affine[0, 0].item() == pytest.approx(4 * 0.29)
    assert sparse.affine[0, 3].item() == pytest.approx(3 * 0.29)
    assert SPARSE_Z_KEY not in x.meta, "the input's meta must not be mutated"


def test_trilinear_reproduces_a_linear_ramp_and_nearest_picks_the_closest_slice() -> None:
    ramp = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1, 1).expand(1, 16, 2, 2).clone()
    sparse = SubsampleZ(4, offset=1)(ramp)  # slices 1, 5, 9, 13
    lin = PrefixResampleZ("trilinear")(sparse)[0, :, 0, 0]
    expected = torch.tensor([1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 13, 13], dtype=torch.float32)
    assert torch.allclose(lin, expected)
    near = PrefixResampleZ("nearest")(sparse)[0, :, 0, 0]
    # ties (z = 3, 7, 11) go to the slice below
    assert near.tolist() == [1, 1, 1, 1, 5, 5, 5, 5, 9, 9, 9, 9, 13, 13, 13, 13]


@pytest.mark.parametrize("n,ratio,depth", [(8, 4, 32), (5, 4, 20), (7, 3, 21), (4, 8, 32)])
def test_hold_matches_reference_interpolate(n: int, ratio: int, depth: int) -> None:
    sparse = torch.randn(1, n, 3, 3)
    out = PrefixResampleZ("hold", ratio=ratio, target_depth=depth)(sparse)
    ref = F.interpolate(sparse[None], size=(depth, 3, 3), mode="nearest")[0]
    assert torch.equal(out.as_tensor() if isinstance(out, MetaTensor) else out, ref)


def test_genuinely_sparse_stack_from_ratio_or_z_steps() -> None:
    sparse = np.random.default_rng(0).normal(size=(1, 9, 4, 4)).astype(np.float32)
    out = PrefixResampleZ("trilinear", ratio=4, target_depth=33)(sparse)
    assert isinstance(out, np.ndarray) and out.shape == (1, 33, 4, 4)
    np.testing.assert_array_equal(out[:, ::4], sparse)
    by_steps = PrefixResampleZ("trilinear", z_step=1.16, target_z_step=0.29, target_depth=33)(sparse)
    np.testing.assert_array_equal(by_steps, out)
    default_depth = PrefixResampleZ("nearest", ratio=4)(sparse)
    assert default_depth.shape[1] == 36
    assert ratio_from_z_steps(0.87, 0.29) == 3


def test_meta_tensor_without_placement_uses_arguments_and_updates_affine() -> None:
    affine = torch.diag(torch.tensor([1.16, 0.29, 0.29, 1.0], dtype=torch.float64))
    sparse = MetaTensor(torch.rand(1, 8, 4, 4), affine=affine)
    full = PrefixResampleZ("nearest", ratio=4)(sparse)
    assert full.shape[1] == 32
    assert full.affine[0, 0].item() == pytest.approx(0.29)


def test_dictionary_pipeline_and_random_phase() -> None:
    label = volume(32, seed=1)
    pipeline = Compose([RandSubsampleZd(keys="image", ratio=[2, 4]), PrefixResampleZd(keys="image", mode="trilinear")])
    pipeline.set_random_state(seed=3)
    offsets, ratios = set(), set()
    for _ in range(40):
        d = pipeline({"image": volume(32), "label": label})
        assert d["image"].shape == d["label"].shape == (2, 32, 6, 5)
        assert torch.equal(d["label"], label), "keys not listed are untouched"
        offsets.add(d["image"].meta["sparse_z_offset"])
        ratios.add(d["image"].meta["sparse_z_ratio"])
    assert ratios == {2, 4} and offsets == {0, 1, 2, 3}
    # same seed, same draws
    pipeline.set_random_state(seed=3)
    first = pipeline({"image": volume(32), "label": label})["image"].meta["sparse_z_offset"]
    pipeline.set_random_state(seed=3)
    assert pipeline({"image": volume(32), "label": label})["image"].meta["sparse_z_offset"] == first

    fixed = SubsampleZd(keys=["image", "label"], ratio=2, offset=1)({"image": volume(32), "label": label})
    assert fixed["image"].shape[1] == fixed["label"].shape[1] == 16
    genuine = PrefixResampleZd(keys="image", mode="nearest", ratio_key="ratio")(
        {"image": torch.rand(1, 4, 2, 2), "ratio": 8}
    )
    assert genuine["image"].shape[1] == 32


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SubsampleZ(0), "ratio"),
        (lambda: SubsampleZ(2.5), "ratio"),
        (lambda: SubsampleZ(4, offset=4), "offset"),
        (lambda: SubsampleZ(2, axis=3), "axis"),
        (lambda: SubsampleZ(4)(torch.rand(1, 3, 8, 8)), "too few slices"),
        (lambda: SubsampleZ(2)(torch.rand(8, 8, 8)), "4 dimensions"),
        (lambda: SubsampleZ(2)(torch.rand(1, 1, 8, 8, 8)), "4 dimensions"),
        (lambda: SubsampleZ(2)(torch.tensor([[[[1.0, float("nan")]]]]).expand(1, 4, 1, 2)), "NaN"),
        (lambda: PrefixResampleZ("trilinear", ratio=2)(torch.tensor([[[[float("inf")]]]])), "NaN/Inf"),
        (lambda: PrefixResampleZ("cubic"), "mode"),
        (lambda: PrefixResampleZ("nearest")(torch.rand(1, 4, 2, 2)), "ratio"),
        (lambda: PrefixResampleZ("nearest", ratio=4, target_depth=10)(torch.rand(1, 4, 2, 2)), "too few slices"),
        (lambda: PrefixResampleZ("nearest", z_step=1.0, target_z_step=0.3), "not an integer multiple"),
        (lambda: PrefixResampleZ("nearest", ratio=2, z_step=1.2, target_z_step=0.3), "disagrees"),
        (lambda: RandSubsampleZd("image", ratio=[]), "non-empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["nearest", "trilinear", "hold"])
def test_subsample_and_prefix_resample_on_cuda_match_cpu(mode):
    volume = torch.rand(1, 16, 8, 8)
    expected = PrefixResampleZ(mode=mode)(SubsampleZ(ratio=4)(volume))
    got = PrefixResampleZ(mode=mode)(SubsampleZ(ratio=4)(volume.cuda()))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected.cpu() if isinstance(expected, torch.Tensor) else expected)
