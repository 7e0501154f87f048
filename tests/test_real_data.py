"""
Real microscopy of ../shared/data through the bundle (scripts/real_pair.py, docs/real_data.md): the split writer of
the fnet2017 brightfield / DNA pair, train.json's ``pretrained_weights``, the trivial baselines' arithmetic, the
script end to end in its quick mode, and the real AICS brightfield field made genuinely sparse and predicted with
inference.json from the command line. The networks are untrained or trained for one step: these tests check the
data path, not prediction quality (the figures are in docs/real_data.md).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, REPO, BundleRunner, run_command
from monai.bundle import ConfigParser
from PIL import Image

from sparsessp_monai.io import read_ome_tiff

SCRIPT = REPO / "scripts" / "real_pair.py"
_spec = importlib.util.spec_from_file_location("real_pair", SCRIPT)
real_pair = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(real_pair)


def need(*paths: Path) -> None:
    """Skip the test, with the reason, when a real data file is absent (a clean clone has no ../shared)."""
    for path in paths:
        if not path.is_file():
            pytest.skip(f"real data file not available: {path} (see ../shared/data/README.md)")


@pytest.fixture(scope="module")
def fresh_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised state dict of train.json's network (inference.json builds the same network), seeded
    differently from the bundle's own initialisation so that loading it is visible."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("fresh") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(real_pair.LIGHT, real_pair.DNA)
    return real_pair.write_split(real_pair.LIGHT, real_pair.DNA, tmp_path_factory.mktemp("pair") / "data")


def test_split_halves_are_disjoint_and_carry_the_spacing(split_dir: Path) -> None:
    light, _ = read_ome_tiff(real_pair.LIGHT)
    dna, _ = read_ome_tiff(real_pair.DNA)
    train = json.loads((split_dir / "datalist_train.json").read_text())
    held = json.loads((split_dir / "datalist_eval.json").read_text())
    train_files = {f for item in train["training"] + train["validation"] for f in (item["image"], item["label"])}
    eval_files = {f for item in held["validation"] for f in (item["image"], item["label"])}
    assert not train_files & eval_files and "training" not in held
    assert all(item["structure"] == "dna" for item in train["training"] + held["validation"])
    halves = {}
    for name in train_files | eval_files:
        data, meta = read_ome_tiff(split_dir / name)
        assert meta["spacing_zyx"] == pytest.approx(real_pair.FNET_SPACING_ZYX)
        halves[name] = data
    (t_img,) = [halves[i["image"]] for i in train["training"]]
    (e_img,) = [halves[i["image"]] for i in held["validation"]]
    (t_lab,) = [halves[i["label"]] for i in train["training"]]
    (e_lab,) = [halves[i["label"]] for i in held["validation"]]
    # X in [0, 64) for training, [64, 128) for evaluation, whole Z and Y: together exactly the original volume
    assert t_img.shape == e_img.shape == (1, 32, 128, 64)
    np.testing.assert_array_equal(np.concatenate([t_img, e_img], axis=-1), light)
    np.testing.assert_array_equal(np.concatenate([t_lab, e_lab], axis=-1), dna)
    # a second call with the same inputs keeps the published folder
    marker = sorted(split_dir.glob(".sparsessp-complete.json"))
    stamp = marker[0].stat().st_mtime_ns
    real_pair.write_split(real_pair.LIGHT, real_pair.DNA, split_dir)
    assert marker[0].stat().st_mtime_ns == stamp


def test_split_can_reverse_z_of_both_volumes(tmp_path: Path) -> None:
    need(real_pair.LIGHT, real_pair.DNA)
    light, _ = read_ome_tiff(real_pair.LIGHT)
    dna, _ = read_ome_tiff(real_pair.DNA)
    out = real_pair.write_split(real_pair.LIGHT, real_pair.DNA, tmp_path / "flip", flip_z=True)
    for half, cut in (("train", np.s_[..., :64]), ("eval", np.s_[..., 64:])):
        image, _ = read_ome_tiff(out / "images" / f"{half}_brightfield.ome.tif")
        label, _ = read_ome_tiff(out / "images" / f"{half}_dna.ome.tif")
        np.testing.assert_array_equal(image, light[:, ::-1][cut])
        np.testing.assert_array_equal(label, dna[:, ::-1][cut])
    # the flip is part of the folder's record: the unflipped split is not taken for it
    again = real_pair.write_split(real_pair.LIGHT, real_pair.DNA, tmp_path / "flip")
    np.testing.assert_array_equal(read_ome_tiff(again / "images" / "eval_dna.ome.tif")[0], dna[..., 64:])


def test_split_refuses_bad_inputs(tmp_path: Path) -> None:
    need(real_pair.LIGHT, real_pair.DNA, real_pair.AICS)
    with pytest.raises(ValueError, match="leaves a half empty"):
        real_pair.write_split(real_pair.LIGHT, real_pair.DNA, tmp_path / "a", split_x=128)
    with pytest.raises(ValueError, match="single-channel volumes of one shape"):
        real_pair.write_split(real_pair.LIGHT, real_pair.AICS, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pretrained_weights_are_loaded_by_initialize(tmp_path: Path, split_dir: Path, fresh_weights: Path) -> None:
    def initialised_network(weights: str | None) -> torch.nn.Module:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(split_dir), "pretrained_weights": weights})
        parser.get_parsed_content("initialize")
        return parser.get_parsed_content("network")

    # initialize builds the network to load the weights, then re-seeds: the data stream of a run is the one it gets
    # without this step (the network would otherwise be built before the DataLoaders draw their seeds)
    initialised_network(str(fresh_weights))
    after = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(4))
    expected = torch.load(fresh_weights, weights_only=True)
    loaded = initialised_network(str(fresh_weights)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    default = initialised_network(None).state_dict()  # the default (null) keeps the bundle's own initialisation
    assert not all(torch.equal(default[k], v) for k, v in expected.items())


def test_baselines_arithmetic() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(3.0, 2.0, (1, 8, 16, 16)).astype(np.float32)
    noise = rng.normal(0.0, 1.0, target.shape).astype(np.float32)
    for sign in (1.0, -1.0):
        # an affine image of the target plus noise: the z-scored baselines depend only on the correlation r
        scores = real_pair.baseline_scores(10.0 + sign * 5.0 * target + 4.0 * noise, target)
        r = scores["brightfield"]["pearson"]
        assert sign * r > 0.5
        assert scores["constant"]["r2"] == pytest.approx(0.0, abs=1e-9) and scores["constant"]["r2"] <= 1e-12
        assert scores["constant"]["mse"] == pytest.approx(1.0, abs=1e-6)
        assert math.isnan(scores["constant"]["pearson"])
        assert scores["brightfield"]["r2"] == pytest.approx(2 * r - 1, abs=1e-5)
        assert scores["brightfield"]["mse"] == pytest.approx(2 - 2 * r, abs=1e-5)
        assert scores["brightfield_linear_fit"]["r2"] == pytest.approx(r * r, abs=1e-5)
        assert scores["brightfield_linear_fit"]["pearson"] == pytest.approx(abs(r), abs=1e-6)
    perfect = real_pair.baseline_scores(2.0 * target + 1.0, target)["brightfield"]
    assert perfect["r2"] == pytest.approx(1.0, abs=1e-6) and perfect["mse"] == pytest.approx(0.0, abs=1e-6)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def test_script_quick_mode_through_the_bundle(tmp_path: Path, fresh_weights: Path) -> None:
    need(real_pair.LIGHT, real_pair.DNA)
    work = tmp_path / "work"
    cmd = [sys.executable, str(SCRIPT), "pair", "--work_dir", str(work), "--quick", "--pretrained", str(fresh_weights)]
    proc = run_command(cmd, env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = json.loads((work / "results.json").read_text())
    runs = {run["init"]: run for run in results["runs"]}
    assert sorted(runs) == ["fine-tuned", "scratch", "zero-shot"] and {r["ratio"] for r in runs.values()} == {4}
    for run in runs.values():
        assert all(math.isfinite(run[m]) for m in ("r2", "pearson", "mse"))
    # the fine-tuned run started from the given weights, not from the bundle's own initialisation
    assert runs["fine-tuned"]["r2"] != runs["scratch"]["r2"]
    assert "--pretrained_weights" in runs["fine-tuned"]["train"]
    assert "--pretrained_weights" not in runs["scratch"]["train"]
    assert "datalist_eval.json" in runs["scratch"]["evaluate"] and "datalist_train.json" in runs["scratch"]["train"]
    assert results["baselines"]["constant"]["r2"] <= 1e-9
    assert results["previews"]["4"]["panels"] == "input | zero-shot | scratch | fine-tuned | target"
    # 5 panels of Y = 128 rows + the Z projection (32 slices x 0.30 / 0.49 um), X = 64 columns
    width, height = png_size(work / "preview_r4.png")
    assert height == 128 + 2 + round(32 * 0.30 / 0.49)
    assert width == 5 * (64 + 2 + round(32 * 0.30 / 0.49)) + 4 * 6
    assert png_size(work / "runs" / "r4_scratch" / "preview_input_prediction_target.png")[1] == height
    assert "| 4 | fine-tuned |" in (work / "results.md").read_text()


def test_script_reports_missing_inputs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "pair", "--work_dir", str(tmp_path), "--light", str(tmp_path / "none.tif")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "none.tif" in proc.stderr


def test_aics_brightfield_sparse_inference(tmp_path: Path, fresh_weights: Path, run_bundle: BundleRunner) -> None:
    need(real_pair.AICS)
    source, meta = read_ome_tiff(real_pair.AICS)
    sz, sy, sx = meta["spacing_zyx"]
    assert source.shape == (6, 57, 204, 341) and sz == pytest.approx(0.29)
    sparse_file = real_pair.write_sparse_brightfield(real_pair.AICS, tmp_path / "sparse", ratio=4)
    sparse, sparse_meta = read_ome_tiff(sparse_file)
    np.testing.assert_array_equal(sparse, source[:1, ::4])  # channel 0 (brightfield), every 4th slice
    assert sparse.shape == (1, 15, 204, 341) and sparse.dtype == np.uint8
    assert sparse_meta["spacing_zyx"] == pytest.approx((4 * 0.29, sy, sx))

    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.pt").symlink_to(fresh_weights)
    out = tmp_path / "output"
    proc = run_bundle(
        "inference",
        "--config_file",
        "bundle/configs/inference.json",
        "--bundle_root",
        str(root),
        "--dataset_dir",
        str(sparse_file.parent),
        "--output_dir",
        str(out),
        "--predict_structures",
        "['dna']",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    stem = sparse_file.name[: -len(".ome.tif")]
    pred, pred_meta = read_ome_tiff(out / f"{stem}_dna.ome.tif")
    # the full 0.29 um grid of the 15 acquired slices, same Y / X grid and voxel sizes as the input
    assert pred.shape == (1, 60, 204, 341) and np.isfinite(pred).all()
    assert pred_meta["spacing_zyx"] == pytest.approx((0.29, sy, sx))
    width, height = png_size(out / f"{stem}_dna_preview.png")
    assert width > 341 and height > 204
