"""ONNX export of the bundle network and of the bioimage.io sparse-stack model: onnxruntime against eager PyTorch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from test_bioimageio import write_small_bundle

from sparsessp_monai.export import (
    bundle_predictor,
    export_network_onnx,
    export_predictor_onnx,
    load_bundle_network,
    onnx_max_abs_diff,
)

onnx = pytest.importorskip("onnx", reason="onnx extra not installed: pip install -e '.[onnx]'")
pytest.importorskip("onnxruntime", reason="onnx extra not installed: pip install -e '.[onnx]'")

ATOL = 1e-4


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> tuple[list[str], Path]:
    return write_small_bundle(tmp_path_factory.mktemp("small_bundle"))


def test_network_onnx_matches_eager(small_bundle, tmp_path):
    configs, weights = small_bundle
    network, _ = load_bundle_network(configs, weights)
    path = export_network_onnx(network, tmp_path / "net.onnx", height=16, width=16)
    onnx.checker.check_model(str(path))
    graph_inputs = [i.name for i in onnx.load(str(path)).graph.input]
    assert graph_inputs == ["image", "task"]
    # another batch size, height, width and task ids than the export's example: the axes are dynamic
    image = torch.randn(3, 1, network.in_depth, 24, 40)
    task = torch.tensor([5, 0, 2])
    diff = onnx_max_abs_diff(path, network, (image, task))
    assert diff < ATOL, diff
    # the task input is live: other ids, other output
    assert onnx_max_abs_diff(path, network, (image, torch.tensor([1, 1, 1]))) < ATOL
    with torch.no_grad():
        assert not torch.allclose(network(image, task), network(image, torch.tensor([1, 1, 1])))


@pytest.mark.parametrize("mode", ["trilinear", "cubic"])
def test_bioimageio_model_onnx_matches_eager(small_bundle, tmp_path, mode):
    configs, weights = small_bundle
    network, config = load_bundle_network(configs, weights, ratio=4)
    predictor = bundle_predictor(network, config, "nucleoli", ratio=4, mode=mode)
    path = export_predictor_onnx(predictor, tmp_path / "model.onnx", height=16, width=16)
    onnx.checker.check_model(str(path))
    sparse = torch.randn(2, 1, predictor.in_depth, 32, 24)
    diff = onnx_max_abs_diff(path, predictor, (sparse,))
    assert diff < ATOL, diff


def test_export_onnx_script(small_bundle, tmp_path):
    configs, weights = small_bundle
    for extra in ([], ["--structure", "dna"]):
        out = tmp_path / f"model{len(extra)}.onnx"
        cmd = [sys.executable, str(REPO / "scripts" / "export_onnx.py"), "--weights", str(weights), "--out", str(out),
               "--config_file", *configs, *extra]
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        diff = float(re.search(r"max abs difference (\S+)", result.stdout).group(1))
        assert out.is_file() and diff < ATOL, result.stdout
