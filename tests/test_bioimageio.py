"""The sparse-stack model (SparseStackPredictor) and the bioimage.io package export, checked by bioimageio.core."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, REPO
from monai.transforms import NormalizeIntensity
from PIL import Image

from sparsessp_monai.export import (
    SparseStackPredictor,
    acquired_slices,
    bundle_predictor,
    load_bundle_network,
    z_resample_matrix,
)
from sparsessp_monai.networks import SparseSSPNet
from sparsessp_monai.transforms import PREFIX_MODES, PrefixResampleZ

# a SparseSSPNet of the bundle's topology small enough for export tests: depth 8 (2 acquired slices at r = 4),
# two levels of 4/8 (3D) and 8/16 (2D) channels
SMALL_NETWORK = {"patch_size": [8, 32, 32], "network_def#features_3d": [4, 8], "network_def#features_2d": [8, 16]}


def write_small_bundle(folder: Path) -> tuple[list[str], Path]:
    """A config overlay for a small bundle network and a checkpoint of it with random weights (FiLM tables too, so
    the structure changes the output): ``(config files, weights file)``."""
    overlay = folder / "small_network.json"
    overlay.write_text(json.dumps(SMALL_NETWORK), encoding="utf-8")
    configs = [str(CONFIGS / "train.json"), str(overlay)]
    torch.manual_seed(0)
    network, _ = load_bundle_network(configs)
    for module in network.modules():
        if hasattr(module, "table"):  # TaskFiLM starts as the identity
            torch.nn.init.normal_(module.table.weight, std=0.5)
    weights = folder / "model.pt"
    torch.save(network.state_dict(), weights)
    return configs, weights


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> tuple[list[str], Path]:
    return write_small_bundle(tmp_path_factory.mktemp("small_bundle"))


@pytest.fixture
def no_network(monkeypatch):
    """Fail any internet connection attempt (the bioimage.io test must run offline)."""

    def refuse(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access attempted in an offline test: {address}")
        return original(self, address, *args)

    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("mode", PREFIX_MODES)
@pytest.mark.parametrize("offset", [0, 1])
def test_z_resample_matrix_is_the_transform(mode, offset):
    n, ratio, depth = acquired_slices(11, 3, offset), 3, 11
    sparse = torch.randn(2, n, 5, 4)
    expected = torch.as_tensor(PrefixResampleZ(mode, ratio=ratio, target_depth=depth, offset=offset)(sparse))
    got = torch.einsum("dk,ckhw->cdhw", z_resample_matrix(n, ratio, depth, mode, offset), sparse)
    assert got.shape == (2, depth, 5, 4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_acquired_slices():
    assert acquired_slices(32, 4) == 8
    assert acquired_slices(32, 4, offset=3) == 8  # slices 3, 7, ..., 31
    assert acquired_slices(10, 4, offset=2) == 2  # slices 2, 6
    with pytest.raises(ValueError, match="offset"):
        acquired_slices(8, 4, offset=4)


def _network(**kwargs) -> SparseSSPNet:
    torch.manual_seed(1)
    net = SparseSSPNet(depth=8, features_3d=(4, 8), features_2d=(8, 16), **kwargs).eval()
    for module in net.modules():
        if hasattr(module, "table"):
            torch.nn.init.normal_(module.table.weight, std=0.5)
    return net


@pytest.mark.parametrize("mode", ["trilinear", "cubic"])
def test_predictor_is_the_bundle_pipeline(mode):
    """Sparse stack -> predictor equals the bundle's PrefixResampleZ then the network with the task id; scripted too."""
    net = _network(num_tasks=6)
    predictor = SparseStackPredictor(net, depth=8, ratio=4, mode=mode, task=3).eval()
    sparse = torch.randn(2, 1, 2, 16, 24)
    full = torch.stack([torch.as_tensor(PrefixResampleZ(mode, ratio=4, target_depth=8)(s)) for s in sparse])
    with torch.no_grad():
        expected = net(full, torch.tensor([3, 3]))
        got = predictor(sparse)
        scripted = torch.jit.script(predictor)(sparse)
        other_structure = SparseStackPredictor(net, depth=8, ratio=4, mode=mode, task=0)(sparse)
    assert got.shape == (2, 1, 8, 16, 24)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scripted, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other_structure, got)  # the fixed task id matters


def test_predictor_suffix_and_unconditioned_networks():
    suffix = _network(z_mapping="suffix", ratio=4)
    predictor = SparseStackPredictor(suffix, depth=8, ratio=4, z_mapping="suffix").eval()
    sparse = torch.randn(1, 1, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(predictor(sparse), suffix(sparse))
        assert torch.jit.script(predictor)(sparse).shape == (1, 1, 8, 16, 16)


def test_bundle_predictor_from_the_config(small_bundle):
    configs, weights = small_bundle
    network, config = load_bundle_network(configs, weights, ratio=4)
    predictor = bundle_predictor(network, config, "mitochondria", ratio=4)
    assert (predictor.depth, predictor.in_depth, predictor.ratio) == (8, 2, 4)
    assert predictor.mode == config["prefix_mode"]
    assert int(predictor.task) == list(config.get_parsed_content("structures")).index("mitochondria")
    with pytest.raises(ValueError, match="unknown structure 'golgi'"):
        bundle_predictor(network, config, "golgi", ratio=4)


def _export(small_bundle, out: Path, *extra: str, structure: str = "dna") -> subprocess.CompletedProcess:
    configs, weights = small_bundle
    # unreachable proxies: any download attempt of bioimageio.spec/core (httpx) fails instead of reaching out
    offline = {name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    env = {**os.environ, **offline, "OMP_NUM_THREADS": "2", "BIOIMAGEIO_CACHE_PATH": str(out.parent / "cache")}
    cmd = [sys.executable, str(REPO / "scripts" / "export_bioimageio.py"), "--weights", str(weights),
           "--structure", structure, "--ratio", "4", "--out", str(out), "--config_file", *configs, "--size", "32",
           *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400, check=False)


def test_export_bioimageio_package_passes_bioimageio_core(small_bundle, tmp_path, no_network):
    pytest.importorskip("bioimageio.core", reason="bioimageio extra not installed: pip install -e '.[bioimageio]'")
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    has_onnx = all(_installed(m) for m in ("onnx", "onnxruntime"))
    out = tmp_path / "dna_r4"
    result = _export(small_bundle, out, "--zip", *([] if has_onnx else ["--no_onnx"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bioimageio.core test: passed" in result.stdout

    for name in ("rdf.yaml", "weights_torchscript.pt", "test_input.npy", "test_output.npy", "cover.png", "README.md",
                 "LICENSE", "sample_input.tif", "sample_output.tif"):
        assert (out / name).is_file(), name
    assert (tmp_path / "dna_r4.zip").is_file()

    descr = load_description(out / "rdf.yaml")
    assert descr.format_version.startswith("0.5"), descr.format_version
    assert str(descr.license) == "Apache-2.0"
    assert any(c.doi is not None and "2407.02159" in str(c.doi) for c in descr.cite)
    (inp,), (outp,) = descr.inputs, descr.outputs
    axes_in = {str(a.id): a for a in inp.axes}
    axes_out = {str(a.id): a for a in outp.axes}
    assert axes_in["z"].size == 2 and axes_out["z"].size == 8  # sparse stack in, full grid out
    assert [p.id for p in inp.preprocessing if p.id != "ensure_dtype"] == ["zero_mean_unit_variance"]
    assert [str(a) for a in next(p for p in inp.preprocessing if p.id == "zero_mean_unit_variance").kwargs.axes] == [
        "z", "y", "x"]
    assert (descr.weights.onnx is not None) == has_onnx

    # the test output is the bundle's pipeline: z-score the sparse stack, prefix resampling, network with the task
    configs, weights = small_bundle
    network, config = load_bundle_network(configs, weights, ratio=4)
    sparse = np.load(out / "test_input.npy")
    assert sparse.shape == (1, 1, 2, 32, 32)
    x = torch.as_tensor(NormalizeIntensity(channel_wise=True)(torch.as_tensor(sparse[0])))
    full = torch.as_tensor(PrefixResampleZ(config["prefix_mode"], ratio=4, target_depth=8)(x))[None]
    with torch.no_grad():
        expected = network(full, torch.tensor([0])).numpy()
    np.testing.assert_allclose(np.load(out / "test_output.npy"), expected, atol=1e-5)

    # bioimageio.core's own test, in this process with the internet refused (the script ran it before publishing)
    summary = test_model(str(out / "rdf.yaml"))
    assert summary.status == "passed", summary.format()
    zipped = load_description(tmp_path / "dna_r4.zip")  # validation of the zip, file hashes included
    assert zipped.validation_summary.status in ("valid-format", "passed"), zipped.validation_summary.format()

    cover = Image.open(out / "cover.png")
    assert cover.mode == "RGB" and 1.5 <= cover.width / cover.height <= 2.5


def test_export_bioimageio_rejects_a_bad_structure(small_bundle, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_bioimageio", REPO / "scripts" / "export_bioimageio.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    configs, weights = small_bundle
    argv = ["--weights", str(weights), "--structure", "golgi", "--out", str(tmp_path / "pkg"),
            "--config_file", *configs]
    assert script.main(argv) == 1
    assert "error: unknown structure 'golgi'" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
