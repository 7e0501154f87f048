"""
The MONAI bundle end to end: the exact user training command, resume, evaluation, inference on genuinely sparse
stacks, bad inputs, and the Model Zoo checks (metadata, network in/out, TorchScript export, workflow properties).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, REPO, SMALL_RUN, train_into
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

import sparsessp_monai
from sparsessp_monai.data import write_sparse_stacks
from sparsessp_monai.engines.bundle_utils import as_bool, default_bundle_root
from sparsessp_monai.io import read_ome_tiff, write_ome_tiff

TRAIN = "bundle/configs/train.json"
SCHEMA = Path(sparsessp_monai.__file__).parent / "schemas" / "meta_schema_20240725.json"

SMALL = SMALL_RUN


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the user's training command once (2 epochs on small demo data) into a temporary bundle root."""
    return train_into(tmp_path_factory.mktemp("bundle_root"), TRAIN, "--train#trainer#max_epochs", "2", *SMALL)


def test_training_command_writes_checkpoints_and_metrics_under_bundle_root(trained: Path) -> None:
    models = trained / "models"
    for name in ("model.pt", "checkpoint_final.pt", "checkpoint_epoch=2.pt"):
        assert (models / name).is_file(), name
    assert (trained / "data" / "demo" / "datalist.json").is_file()
    with open(trained / "eval" / "metrics_per_structure.csv") as f:
        rows = {r["structure"]: r for r in csv.DictReader(f)}
    assert set(sparsessp_monai.data.STRUCTURES) <= set(rows)
    assert all(math.isfinite(float(rows[s]["val_r2"])) for s in rows)
    # the best-metric model is a plain state dict that loads on CPU into the network of the config
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(models / "model.pt", map_location="cpu", weights_only=True))


def test_training_learns_beyond_a_constant_prediction(tmp_path: Path, run_bundle) -> None:
    """The user's command on one structure for 40 steps must predict better than any constant (R2 <= 0 there)."""
    proc = run_bundle(
        "training", "--config_file", TRAIN, "--bundle_root", str(tmp_path), "--train#trainer#max_epochs", "20",
        "--structures", "['dna']", "--demo#num_per_structure", "4", "--demo#shape", "[32,64,64]",
        "--patch_size", "[32,32,32]", "--val_roi_size", "[32,64,64]", "--samples_per_volume", "4",
        "--batch_size", "2", "--val_interval", "20",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    with open(tmp_path / "eval" / "metrics_per_structure.csv") as f:
        row = {r["structure"]: r for r in csv.DictReader(f)}["dna"]
    # measured R2 0.53 / 0.52, Pearson r 0.75 / 0.73 (seeds 0 / 1, fp32 on AVX512 without bf16); a model predicting
    # zeros or the mean scores R2 <= 0 and no correlation. The nuclei are the structure the demo model learns first:
    # with the small nucleoli 40 steps gave R2 0.01-0.21 depending on the CPU's arithmetic (fp32, emulated or
    # native bf16), too close to any bar.
    assert float(row["val_r2"]) > 0.25, row
    assert float(row["val_pearson"]) > 0.5, row


def test_resume_continues_from_the_last_interval_checkpoint(trained: Path, tmp_path: Path, run_bundle) -> None:
    root = tmp_path / "resumed"
    (root / "models").mkdir(parents=True)
    os.link(trained / "models" / "checkpoint_epoch=2.pt", root / "models" / "checkpoint_epoch=2.pt")
    os.symlink(trained / "data", root / "data")
    # the 0-byte remains of a killed write, newer than the good checkpoint: skipped with a warning naming it
    (root / "models" / "checkpoint_epoch=5.pt").write_bytes(b"")
    proc = run_bundle(
        "training", "--config_file", TRAIN, "--bundle_root", str(root), "--resume", "true",
        "--train#trainer#max_epochs", "3", *SMALL,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:]
    assert f"skipping unreadable checkpoint {root / 'models' / 'checkpoint_epoch=5.pt'} (0 bytes)" in out
    assert f"resuming training from {root / 'models' / 'checkpoint_epoch=2.pt'}" in out
    assert "Epoch: 1/3" not in out and "Epoch: 3/3" in out
    assert (root / "models" / "checkpoint_epoch=3.pt").is_file()
    assert not (root / "models" / "checkpoint_epoch=2.pt").exists(), "only the newest interval checkpoint is kept"
    assert not (root / "models" / "checkpoint_epoch=5.pt").exists()

    # "--resume false" typed on the command line arrives as a string and must mean no
    proc = run_bundle(
        "training", "--config_file", TRAIN, "--bundle_root", str(root), "--resume", "false",
        "--train#trainer#max_epochs", "1", *SMALL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "resuming training from" not in proc.stdout
    assert (root / "models" / "checkpoint_epoch=1.pt").is_file()


def test_evaluate_writes_per_image_and_per_structure_csv(trained: Path, run_bundle) -> None:
    proc = run_bundle(
        "evaluating",
        "--config_file",
        "['bundle/configs/train.json','bundle/configs/evaluate.json']",
        "--bundle_root",
        str(trained),
        *SMALL,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    with open(trained / "eval" / "metrics_per_image.csv") as f:
        images = list(csv.DictReader(f))
    assert len(images) == len(sparsessp_monai.data.STRUCTURES)  # one validation image per structure
    assert {"filename", "structure", "val_r2", "val_mse", "val_mae", "val_pearson"} <= set(images[0])


@pytest.fixture(scope="module")
def sparse_inputs(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sparse")
    write_sparse_stacks(trained / "data" / "demo" / "datalist.json", folder, ratio=4)
    return folder


@pytest.fixture
def infer(run_bundle):
    """Run ``inference.json`` from bundle ``root`` on the stacks in ``inputs``."""

    def run(root: Path, inputs: Path, *extra: str) -> subprocess.CompletedProcess:
        return run_bundle(
            "inference", "--config_file", "bundle/configs/inference.json", "--bundle_root", str(root),
            "--dataset_dir", str(inputs), "--roi_size", "[32,64,64]", *extra,
        )  # fmt: skip

    return run


def test_inference_on_genuinely_sparse_stacks_writes_full_grid_predictions(
    infer, trained: Path, sparse_inputs: Path
) -> None:
    out = trained / "predictions"
    proc = infer(trained, sparse_inputs, "--predict_structures", "['dna','membrane']", "--output_dir", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:]
    inputs = sorted(sparse_inputs.glob("*.ome.tif"))
    assert len(list(out.glob("*.ome.tif"))) == 2 * len(inputs)
    sparse, sparse_meta = read_ome_tiff(inputs[0])
    pred, meta = read_ome_tiff(out / inputs[0].name.replace(".ome.tif", "_dna.ome.tif"))
    assert sparse.shape[1] == 8 and sparse_meta["spacing_zyx"][0] == pytest.approx(1.16)
    assert pred.shape == (1, 32, 64, 64)
    assert meta["spacing_zyx"] == pytest.approx((0.29, 0.29, 0.29))
    assert meta["channel_names"] == ["dna"]
    assert np.isfinite(pred).all()
    assert not list(trained.glob(".predictions.staging-*")) and not list(out.glob(".*staging*"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--predict_structures", "['golgi']"], "unknown structure name"),
        (["--ratio", "2"], "ratio 2 was configured"),
    ],
)
def test_inference_rejects_bad_requests_without_writing(
    infer, trained: Path, sparse_inputs: Path, extra, message
) -> None:
    out = trained / "out_bad"
    proc = infer(trained, sparse_inputs, "--output_dir", str(out), *extra)
    assert proc.returncode != 0
    assert message in proc.stdout
    assert not out.exists()
    assert not list(trained.glob(".out_bad.staging-*")), "staged outputs of a failed run must be removed"


def test_inference_fails_whole_on_a_bad_file_and_leaves_no_partial_output(
    infer, trained: Path, sparse_inputs: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = sorted(sparse_inputs.glob("*.ome.tif"))[0]
    (inputs / "a_good.ome.tif").write_bytes(good.read_bytes())
    data, _ = read_ome_tiff(good)
    data = data.astype(np.float32)
    data[0, 3, 5, 5] = np.nan
    write_ome_tiff(inputs / "b_nan.ome.tif", data, spacing_zyx=(1.16, 0.29, 0.29))
    out = tmp_path / "predictions"
    proc = infer(trained, inputs, "--output_dir", str(out), "--predict_structures", "['dna']")
    assert proc.returncode != 0
    assert "NaN" in proc.stdout
    assert not out.exists(), "the good file's prediction must not be published by a failed run"
    (inputs / "b_nan.ome.tif").write_bytes(b"not a tiff")
    proc = infer(trained, inputs, "--output_dir", str(out), "--predict_structures", "['dna']")
    assert proc.returncode != 0
    assert "b_nan.ome.tif" in proc.stdout
    assert not out.exists()


def test_metadata_verifies_offline_against_the_shipped_schema() -> None:
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize("config", ["inference.json", "train.json"])
def test_verify_net_in_out_command_runs_on_the_image_alone(config: str) -> None:
    # as the Model Zoo's CONTRIBUTING writes it, from the bundle folder: no task ids (default_structure is used)
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
         "configs/metadata.json", "--config_file", f"configs/{config}", "--device", "cpu"],
        cwd=REPO / "bundle", capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_default_structure_picks_the_task_of_a_call_without_task_ids() -> None:
    def default_task(**override) -> int | None:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update(override)
        return parser.get_parsed_content("network_def").default_task

    assert default_task() == 0  # the first structure, dna
    assert default_task(default_structure="actin") == sparsessp_monai.data.STRUCTURES.index("actin")
    assert default_task(structures=["nucleoli", "actin"]) == 0
    with pytest.raises(RuntimeError) as raised:
        default_task(structures=["nucleoli"], default_structure="dna")
    assert "'dna' is not in list" in str(raised.value.__cause__)


def test_zoo_checks_net_in_out_and_torchscript_export(trained: Path, tmp_path: Path) -> None:
    config, meta = str(CONFIGS / "train.json"), str(CONFIGS / "metadata.json")
    # explicit task ids keep working
    verify_net_in_out(
        net_id="network_def",
        meta_file=meta,
        config_file=config,
        device="cpu",
        n=4,
        extra_forward_args={"task": torch.tensor([1])},
    )
    exported = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(trained / "models" / "model.pt"),
        meta_file=meta,
        config_file=config,
    )
    scripted = torch.jit.load(str(exported), map_location="cpu")
    parser = ConfigParser()
    parser.read_config(config)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    x, task = torch.randn(1, 1, 32, 64, 64), torch.tensor([3])
    with torch.no_grad():
        assert torch.allclose(scripted(x, task), net(x, task), atol=1e-5)
        # the image alone: the default structure (dna, task 0)
        assert torch.allclose(scripted(x), net(x, torch.tensor([0])), atol=1e-5)


def workflow(workflow_type: str, config: str, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / config),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **override,
    )
    wf.initialize()
    return wf


def test_config_workflows_have_every_property_and_run(trained: Path, sparse_inputs: Path) -> None:
    small = {"demo#num_per_structure": 2, "demo#shape": [32, 64, 64], "patch_size": [32, 32, 32]}
    train = workflow("train", "train.json", bundle_root=str(trained), **small, val_roi_size=[32, 64, 64])
    assert not train.check_properties()
    configured = json.loads((CONFIGS / "train.json").read_text())["train"]["trainer"]["max_epochs"]
    assert train.max_epochs == configured and train.bundle_root == str(trained)

    out = trained / "workflow_predictions"
    infer_wf = workflow(
        "infer",
        "inference.json",
        bundle_root=str(trained),
        dataset_dir=str(sparse_inputs),
        roi_size=[32, 64, 64],
        predict_structures=["nucleoli"],
        output_dir=str(out),
    )
    assert not infer_wf.check_properties()
    infer_wf.run()
    infer_wf.finalize()
    assert len(list(out.glob("*_nucleoli.ome.tif"))) == len(list(sparse_inputs.glob("*.ome.tif")))


def test_as_bool_reads_command_line_flags() -> None:
    assert [as_bool(v) for v in ("true", "True", "1", "yes", True, 1)] == [True] * 6
    assert [as_bool(v) for v in ("false", "False", "0", "no", "", False, 0, None)] == [False] * 8
    with pytest.raises(ValueError, match="boolean flag"):
        as_bool("maybe")


def test_bundle_root_follows_the_config_file_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["monai.bundle", "run", "training", "--config_file", str(tmp_path / "b" / "configs" / "train.json")]
    assert default_bundle_root(argv) == str(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    merged = ["x", "--config_file", "['bundle/configs/train.json','bundle/configs/evaluate.json']"]
    assert default_bundle_root(merged) == str(tmp_path / "bundle")
    assert default_bundle_root(["python", "script.py"]) == str(REPO / "bundle")
