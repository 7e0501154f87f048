"""Sparse-Z transforms: subsampling, prefix resampling (the cubic B-spline against scipy included), metadata,
dictionary versions and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose
from scipy import ndimage  # the reference cubic B-spline (a test requirement)

from sparsessp_monai.transforms import (
    PREFIX_MODES,
    SPARSE_Z_KEY,
    PrefixResampleZ,
    PrefixResampleZd,
    RandSubsampleZd,
    SubsampleZ,
    SubsampleZd,
    cubic_bspline_matrix,
    ratio_from_z_steps,
    z_placement,
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


@pytest.mark.parametrize("n, ratio, offset, axis", [(2, 4, 0, 0), (5, 3, 1, 0), (7, 4, 2, 1), (4, 2, 1, 2)])
def test_cubic_resample_matches_scipy_order3_mirror(n: int, ratio: int, offset: int, axis: int) -> None:
    rng = np.random.default_rng(n)
    shape = [3, 4, 5]
    shape[axis] = n
    sparse = rng.normal(size=(1, *shape)).astype(np.float32)
    depth = n * ratio
    out = PrefixResampleZ("cubic", ratio=ratio, offset=offset, axis=axis, target_depth=depth)(torch.from_numpy(sparse))
    coords = (np.arange(depth) - offset) / ratio
    grids = list(np.meshgrid(*[np.arange(s, dtype=float) for s in out.shape[1:]], indexing="ij"))
    grids[axis] = coords.reshape([-1 if d == axis else 1 for d in range(3)]) + 0 * grids[axis]
    ref = ndimage.map_coordinates(sparse[0].astype(np.float64), grids, order=3, mode="mirror")
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-5)


def test_cubic_resample_keeps_acquired_slices_and_sets_thin_affine() -> None:
    full = MetaTensor(torch.rand(1, 21, 6, 5), affine=torch.diag(torch.tensor([1.5, 0.8, 0.8, 1.0])))
    full.affine[0, 3] = -30.0
    sparse = SubsampleZ(ratio=4, offset=1)(full)
    thin = PrefixResampleZ("cubic")(sparse)
    assert thin.shape == full.shape
    torch.testing.assert_close(thin[:, 1::4], full[:, 1::4], atol=1e-5, rtol=0)
    torch.testing.assert_close(thin.affine, full.affine)
    assert thin.meta["sparse_z_ratio"] == 4 and thin.meta["sparse_z_offset"] == 1
    with pytest.raises(ValueError, match="too few slices"):
        PrefixResampleZ("cubic")(SubsampleZ(ratio=4)(full[:, :4]))
    with pytest.raises(ValueError, match="too few slices"):
        PrefixResampleZd("image", mode="trilinear", min_slices=2)({"image": SubsampleZ(ratio=4)(full[:, :4])})
    # one slice is a valid (constant) interpolation for the other modes unless min_slices asks for more
    assert (
        PrefixResampleZd("image", mode="trilinear")({"image": SubsampleZ(ratio=4)(full[:, :4])})["image"].shape[1] == 4
    )


def test_cubic_through_the_dictionary_version_with_ratio_key() -> None:
    # a genuinely sparse stack: 6 slices acquired every 3rd thin slice, the ratio read from the data dictionary
    sparse = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 6, 4, 3)).astype(np.float32))
    d = PrefixResampleZd("image", mode="cubic", ratio_key="ratio")({"image": sparse, "ratio": 3})
    thin = d["image"]
    assert thin.shape == (2, 18, 4, 3) and d["ratio"] == 3
    torch.testing.assert_close(thin[:, ::3], sparse, atol=1e-5, rtol=0)
    # the same numbers as the array transform and as the matrix applied by hand
    torch.testing.assert_close(thin, PrefixResampleZ("cubic", ratio=3)(sparse))
    m = torch.from_numpy(cubic_bspline_matrix(6, np.arange(18) / 3)).float()
    torch.testing.assert_close(thin, torch.einsum("zk,ckyx->czyx", m, sparse), atol=1e-5, rtol=0)
    # ratio_key takes precedence over the ratio argument; an absent entry falls back to it
    assert (
        PrefixResampleZd("image", mode="cubic", ratio=2, ratio_key="ratio")({"image": sparse, "ratio": 4})[
            "image"
        ].shape[1]
        == 24
    )
    assert (
        PrefixResampleZd("image", mode="cubic", ratio=2, ratio_key="ratio")({"image": sparse})["image"].shape[1] == 12
    )
    with pytest.raises(ValueError, match="too few slices"):
        PrefixResampleZd("image", mode="cubic", ratio_key="ratio")({"image": sparse[:, :1], "ratio": 3})


def test_cubic_through_the_dictionary_version_with_sparse_z_meta() -> None:
    x = volume(30, axis=2, seed=2)
    pipeline = Compose(
        [
            SubsampleZd(keys="image", ratio=4, offset=2, axis=2),
            # the placement recorded by SubsampleZ wins over ratio_key and the constructor's arguments
            PrefixResampleZd(keys="image", mode="cubic", ratio=8, axis=2, ratio_key="ratio"),
        ]
    )
    d = pipeline({"image": x, "label": x.clone(), "ratio": 3})
    thin = d["image"]
    assert thin.shape == x.shape and torch.equal(d["label"], x)
    kept = torch.arange(2, 30, 4)
    torch.testing.assert_close(thin.index_select(3, kept), x.index_select(3, kept), atol=1e-5, rtol=0)
    torch.testing.assert_close(thin.affine, x.affine)
    assert SPARSE_Z_KEY not in thin.meta
    assert thin.meta["sparse_z_ratio"] == 4 and thin.meta["sparse_z_offset"] == 2
    # spline, not a copy: the missing slices differ from the nearest and the linear fills
    near = PrefixResampleZ("nearest")(SubsampleZ(4, offset=2, axis=2)(x))
    lin = PrefixResampleZ("trilinear")(SubsampleZ(4, offset=2, axis=2)(x))
    assert not torch.allclose(thin[..., 3], near[..., 3]) and not torch.allclose(thin[..., 3], lin[..., 3])


def test_placement_from_meta_or_arguments() -> None:
    sparse = SubsampleZ(4, offset=3, axis=1)(volume(22, axis=1))
    assert z_placement(sparse, ratio=2, offset=0, target_depth=99, axis=0) == (4, 3, 22, 1)
    plain = torch.rand(1, 5, 2, 2)
    assert z_placement(plain, ratio=3) == (3, 0, 15, 0)
    assert z_placement(plain, ratio=3, offset=1, target_depth=14) == (3, 1, 14, 0)
    with pytest.raises(ValueError, match="ratio"):
        z_placement(plain)


def test_cubic_bspline_matrix_interpolates_and_checks_its_size() -> None:
    for n in (1, 2, 5):
        np.testing.assert_allclose(cubic_bspline_matrix(n, np.arange(n)), np.eye(n), atol=1e-12)
    # one sample: the spline is that constant everywhere
    np.testing.assert_allclose(cubic_bspline_matrix(1, [-1.5, 0.25, 3.0]), np.ones((3, 1)), atol=1e-12)
    with pytest.raises(ValueError, match="at least one sample"):
        cubic_bspline_matrix(0, [0.0])


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
        (lambda: PrefixResampleZ("bicubic"), "mode"),
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
@pytest.mark.parametrize("mode", PREFIX_MODES)
def test_subsample_and_prefix_resample_on_cuda_match_cpu(mode):
    volume = torch.rand(1, 16, 8, 8)
    expected = PrefixResampleZ(mode=mode)(SubsampleZ(ratio=4)(volume))
    got = PrefixResampleZ(mode=mode)(SubsampleZ(ratio=4)(volume.cuda()))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected.cpu() if isinstance(expected, torch.Tensor) else expected)
