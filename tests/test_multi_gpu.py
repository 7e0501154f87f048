"""The multi-GPU training config (bundle/configs/multi_gpu_train.json) merged on train.json, run with torchrun."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import run_command
from monai.bundle import ConfigParser
from monai.utils import optional_import

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "bundle" / "configs"
CONFIG_FILES = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")]
NPROC = 2
TIMEOUT_S = 300

# a tiny run: 2 samples per structure (6 training and 6 validation volumes, 3 of each per rank), one epoch
ONE_EPOCH = {"train#trainer#max_epochs": 1, "val_interval": 1, "patch_size": [32, 32, 32]}
OVERRIDES = {**ONE_EPOCH, "demo#num_per_structure": 2, "demo#shape": [32, 64, 64], "val_roi_size": [32, 64, 64]}

# handlers that only log or write files: rank 0 only; every other handler runs on all ranks (the metric reports
# gather across ranks, the resumable checkpoint must be loaded by every rank, gathers the random states of every
# rank and is written on rank 0 only)
RANK0_ONLY = {
    "StatsHandler",
    "TensorBoardStatsHandler",
    "ignite.contrib.handlers.ProgressBar",
    "sparsessp_monai.handlers.BestModelSaver",
}
RANK_GATE = "dist.get_rank() > 0"

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def _cli_args(overrides: dict) -> list[str]:
    """``--id value`` pairs for the monai.bundle (fire) command line; lists as Python literals."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    return args


def _torchrun(
    bundle_root: Path, config_files: list[str] = CONFIG_FILES, overrides: dict = OVERRIDES, **extra
) -> subprocess.CompletedProcess:
    """Run the Model Zoo multi-GPU command on CPU (gloo), killing the whole process group on timeout."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={NPROC}",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(config_files),
        "--bundle_root",
        str(bundle_root),
        *_cli_args({**overrides, **extra}),
    ]
    # no GPU for the ranks, whatever the machine has: the config then picks the CPU and gloo
    return run_command(cmd, timeout=TIMEOUT_S, env={"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})


def _plain_network() -> torch.nn.Module:
    """A fresh SparseSSPNet (no DDP) built from the config's ``network_def`` with the test overrides."""
    parser = ConfigParser()
    parser.read_config(CONFIG_FILES)
    parser.update(OVERRIDES)
    net = parser.get_parsed_content("network_def")
    assert type(net).__name__ == "SparseSSPNet"
    return net


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_only_logging_and_saving_handlers_are_limited_to_rank_0() -> None:
    merged = ConfigParser()
    merged.read_config(CONFIG_FILES)
    single = ConfigParser()
    single.read_config(CONFIG_FILES[0])
    for handlers_id in ("train#handlers", "validate#handlers"):
        for i, handler in enumerate(merged[handlers_id]):
            target = handler["_target_"]
            disabled = str(handler.get("_disabled_", ""))
            gated = RANK_GATE in disabled
            assert gated == (target in RANK0_ONLY), f"{handlers_id}#{i} ({target}): _disabled_={disabled!r}"
            # a rank gate keeps the single-process condition of train.json (e.g. `not @use_tensorboard`)
            original = str(single[handlers_id][i].get("_disabled_", "")).lstrip("$")
            assert single[handlers_id][i]["_target_"] == target
            assert original in disabled
    for loader in ("train#dataloader", "validate#dataloader"):
        assert merged[f"{loader}#shuffle"] is False
        assert merged[f"{loader}#sampler"].startswith("@")
    assert merged["train#sampler#even_divisible"] is True  # same number of iterations on every rank (DDP)
    assert merged["validate#sampler#even_divisible"] is False  # every image evaluated exactly once
    assert merged["network#_target_"] == "torch.nn.parallel.DistributedDataParallel"


@needs_gloo
def test_torchrun_two_ranks_on_cpu_trains_validates_resumes_and_saves_a_plain_model(tmp_path: Path) -> None:
    # the first run stops after epoch 1 of a 2-epoch schedule, so that its resume to 2 epochs is an exact resume
    result = _torchrun(tmp_path, **{"lr_scheduler#T_max": 2})
    assert result.returncode == 0, result.stdout[-6000:]

    models = tmp_path / "models"
    for name in ("model.pt", "checkpoint_final.pt", "checkpoint_epoch=1.pt"):
        assert (models / name).is_file(), f"{name} missing; {sorted(p.name for p in models.iterdir())}"

    # the best model and the final checkpoint hold the bare network: strict load into a plain SparseSSPNet
    net = _plain_network()
    net.load_state_dict(torch.load(models / "model.pt", map_location="cpu", weights_only=True), strict=True)
    final = torch.load(models / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    assert set(final) >= {"model", "optimizer", "lr_scheduler", "trainer"}
    _plain_network().load_state_dict(final["model"], strict=True)

    # rank 0 reports every validation image exactly once (gathered over ranks, no sampler padding)
    datalist = json.loads((tmp_path / "data" / "demo" / "datalist.json").read_text())
    expected = sorted(str(tmp_path / "data" / "demo" / item["image"]) for item in datalist["validation"])
    per_image = _read_csv(tmp_path / "eval" / "metrics_per_image.csv")
    assert sorted(row["filename"] for row in per_image) == expected
    per_structure = {row["structure"]: row for row in _read_csv(tmp_path / "eval" / "metrics_per_structure.csv")}
    assert int(per_structure["all_images"]["n_images"]) == len(expected)

    # TensorBoard writes only on rank 0: one event file for the trainer and one for the evaluator
    events = list((tmp_path / "eval").glob("events.out.tfevents.*"))
    assert len(events) == (2 if optional_import("torch.utils.tensorboard")[1] else 0), events

    # resume: every rank must load the checkpoint, or the ranks run different epochs and the collectives fail
    result = _torchrun(tmp_path, **{"train#trainer#max_epochs": 2, "resume": True})
    assert result.returncode == 0, result.stdout[-6000:]
    assert (models / "checkpoint_epoch=2.pt").is_file()
    final = torch.load(models / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert final["trainer"]["max_epochs"] == 2
    assert final["trainer"]["iteration"] == 2 * final["trainer"]["epoch_length"]
    # each rank's own random states (seeded seed + rank) are saved and restored
    ranks = final["random_states"]["ranks"]
    assert len(ranks) == NPROC and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])

    # and the resumed run ends with the weights of an uninterrupted 2-epoch run, bit for bit
    reference = tmp_path / "uninterrupted"
    (reference / "data").parent.mkdir()
    (reference / "data").symlink_to(tmp_path / "data")
    result = _torchrun(reference, **{"train#trainer#max_epochs": 2})
    assert result.returncode == 0, result.stdout[-6000:]
    expected = torch.load(reference / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(expected["model"][k], final["model"][k]) for k in expected["model"])


# the CT overlay merged between train.json and the multi-GPU config: CT gets multi-GPU training for free
CT_CONFIG_FILES = [str(CONFIGS / "train.json"), str(CONFIGS / "ct_train.json"), str(CONFIGS / "multi_gpu_train.json")]
CT_OVERRIDES = {**ONE_EPOCH, "demo#num_train": 2, "demo#num_val": 2, "num_val": 2, "demo#shape": [32, 32, 40]}
CT_OVERRIDES.update({"val_roi_size": [32, 32, 32], "samples_per_volume": 2})


@needs_gloo
def test_torchrun_two_ranks_train_the_ct_overlay(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, CT_CONFIG_FILES, CT_OVERRIDES)
    assert result.returncode == 0, result.stdout[-6000:]
    models = tmp_path / "models" / "ct"
    for name in ("model.pt", "checkpoint_final.pt", "checkpoint_epoch=1.pt"):
        assert (models / name).is_file(), f"{name} missing"
    # each rank scores its own validation volume; the report gathers both (written once, on rank 0)
    rows = _read_csv(tmp_path / "eval" / "ct" / "val_per_volume.csv")
    assert sorted(Path(r["filename"]).name for r in rows) == ["ct_002.nii.gz", "ct_003.nii.gz"]
