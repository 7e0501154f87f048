"""Memory: freed tensors stay in the process (keep_freed_memory) instead of being faulted in again on every step,
and the inference path makes no volume-sized temporaries (NaN counts) or copies (collation)."""

from __future__ import annotations

import copy
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from monai.data import MetaTensor

from sparsessp_monai.data import view_collate
from sparsessp_monai.io import write_ome_tiff
from sparsessp_monai.transforms.finite import count_nonfinite

PROBE = """
import resource, sys, torch
from sparsessp_monai.engines import keep_freed_memory
applied = keep_freed_memory(sys.argv[1] == "on")
x = torch.ones(8 << 20)  # 32 MiB
def step():
    return float((x * 2.0 + 1.0).sum())  # two temporaries of 32 MiB, freed at once
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return bool(int(applied)), int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    applied_off, faults_off = _faults("off")
    applied_on, faults_on = _faults("on")
    assert not applied_off and applied_on
    # without it every 32 MiB temporary is a fresh mmap: 8192 pages each, two per step
    assert faults_off > 20 * 8192
    assert faults_on < faults_off / 20


# --- no volume-sized temporaries or copies on the inference path -------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "meta", "numpy", "one_dim"])
def test_count_nonfinite_counts_nan_and_inf_block_by_block_in_any_layout(layout: str) -> None:
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(2, 7, 33, 65, generator=gen)
    flat = t.view(-1)
    picks = torch.randperm(flat.numel(), generator=gen)[:301]
    flat[picks[:150]] = float("nan")
    flat[picks[150:200]] = float("inf")
    flat[picks[200:]] = -float("inf")
    values = {
        "contiguous": t,
        "transposed": t.transpose(1, 3),  # a non-contiguous view: blocks are taken without copying it
        "meta": MetaTensor(t, meta={"filename_or_obj": "a.tif"}),
        "numpy": t.numpy(),
        "one_dim": flat,
    }[layout]
    # blocks smaller than a row, a row, several rows, everything: always the same count
    assert {count_nonfinite(values, block=b) for b in (1, 50, 65, 1000, 10**7)} == {301}
    assert count_nonfinite(torch.zeros(3, 4)) == 0
    assert count_nonfinite(torch.arange(10)) == 0  # integers are always finite
    assert count_nonfinite(torch.empty(0, 5)) == 0


def _loaded_item(tmp_path, depth_first=None) -> dict:
    from sparsessp_monai.transforms import DepthFirstd, LoadVolumed, PrefixResampleZd

    depth_first = depth_first or DepthFirstd("image")
    path = tmp_path / "s.ome.tif"
    write_ome_tiff(path, np.random.default_rng(0).random((1, 4, 16, 16), dtype=np.float32), [1.16, 0.29, 0.29])
    load = LoadVolumed("image", ensure_channel_first=True, image_only=True)
    item = load({"image": str(path), "task": 1, "name": "s"})
    return PrefixResampleZd("image", ratio=4, mode="trilinear")(depth_first(item))


def test_view_collate_batches_one_volume_without_copying_it_and_inverts_as_list_data_collate(tmp_path) -> None:
    from monai.data import decollate_batch, list_data_collate

    from sparsessp_monai.transforms import DepthFirstd

    depth_first = DepthFirstd("image")
    item = _loaded_item(tmp_path, depth_first)
    mine, monai = view_collate([item]), list_data_collate([copy.deepcopy(item)])
    assert mine.keys() == monai.keys()
    image = mine["image"]
    assert isinstance(image, MetaTensor) and image.is_batch and image.shape == (1, 1, 16, 16, 16)
    assert torch.equal(image, monai["image"]) and torch.equal(mine["task"], monai["task"]) and mine["name"] == ["s"]
    assert image.meta.keys() == monai["image"].meta.keys()
    assert torch.equal(image.affine, monai["image"].affine)
    assert image.applied_operations == monai["image"].applied_operations
    assert image.spatial_ndim == monai["image"].spatial_ndim == 3
    # decollated and inverted (Invertd's layout restore) exactly like MONAI's collation
    inverse = depth_first.inverse
    back, ref = inverse(decollate_batch(mine)[0])["image"], inverse(decollate_batch(monai)[0])["image"]
    assert back.shape == ref.shape and torch.equal(back, ref) and torch.equal(back.affine, ref.affine)
    # several items (or list items) are stacked by MONAI's collation as before
    two = view_collate([_loaded_item(tmp_path), _loaded_item(tmp_path)])
    assert two["image"].shape == (2, 1, 16, 16, 16) and two["image"].is_batch


def test_view_collate_shares_the_items_memory_in_the_inference_loader(tmp_path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "inference.json"))
    assert parser.get_parsed_content("dataloader#collate_fn") is view_collate
    item = _loaded_item(tmp_path)
    assert view_collate([item])["image"].data_ptr() == item["image"].data_ptr()
