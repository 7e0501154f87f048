"""
The Model Zoo export: a tiny run of the default training command (with its progress bar), then
``scripts/export_zoo_bundle.py`` on its weights and metrics CSV, and MONAI's own checks on the exported bundle run
the way the Model Zoo runs them: from the bundle folder, without this repository or its package importable.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, REPO, SMALL_RUN
from monai.bundle import ConfigParser

import sparsessp_monai
from sparsessp_monai.data import write_sparse_stacks
from sparsessp_monai.engines.zoo_export import ZOO_BUNDLE_NAME, file_sha256, read_metrics_csv, rename_package

SCHEMA = Path(sparsessp_monai.__file__).parent / "schemas" / "meta_schema_20240725.json"
# checked on PyPI (`pip index versions NAME`, 2026-12-01): each name exists there at the version installed here
PUBLIC_PACKAGES = {"pytorch-ignite", "tifffile", "nibabel", "Pillow", "tqdm", "fire", "tensorboard"}
TINY = ["--train#trainer#max_epochs", "1", *SMALL_RUN]
# a tqdm bar as Ignite's ProgressBar and MONAI's SlidingWindowInferer draw it: " 50%|█████     | 3/6 [...]"
PROGRESS_BAR = re.compile(r"\d+%\|[^|\n\r]*\| ?\d+/\d+")

# run a monai.bundle command the way a Model Zoo user does (cwd = the bundle folder, on sys.path first), isolated
# (-I: no PYTHONPATH, no user site) and with the repository's package made unimportable
ISOLATED = """
import atexit, os, runpy, sys
sys.path.insert(0, os.getcwd())
sys.modules["sparsessp_monai"] = None  # any import of it raises ImportError
atexit.register(lambda: print("vendored code:", getattr(sys.modules.get("scripts"), "__file__", None)))
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def run_isolated(bundle: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, *args],
        cwd=bundle,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def export(out: Path, weights: Path, metrics: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "scripts/export_zoo_bundle.py", "--out", str(out), "--weights", str(weights)]
    return subprocess.run(
        [*cmd, "--metrics", str(metrics), *extra], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, run_bundle) -> tuple[Path, str]:
    """The default training command, one epoch on tiny demo data: (bundle root, its console output)."""
    root = tmp_path_factory.mktemp("zoo_train")
    proc = run_bundle("training", "--config_file", "bundle/configs/train.json", "--bundle_root", str(root), *TINY)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return root, proc.stdout


@pytest.fixture(scope="module")
def exported(tiny_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tiny_run[0]
    out = tmp_path_factory.mktemp("zoo") / "models"
    proc = export(out, root / "models" / "model.pt", root / "eval" / "metrics_per_structure.csv")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "not hosted" in proc.stderr
    bundle = out / ZOO_BUNDLE_NAME
    assert proc.stdout.strip() == str(bundle)
    return bundle


def test_default_training_shows_a_progress_bar(tiny_run: tuple[Path, str]) -> None:
    assert PROGRESS_BAR.search(tiny_run[1]), tiny_run[1][-3000:]


def test_export_writes_a_complete_zoo_bundle(exported: Path, tiny_run: tuple[Path, str]) -> None:
    for name in ("LICENSE", "large_files.yml", "models/model.pt", "docs/README.md", "scripts/__init__.py"):
        assert (exported / name).is_file(), name
    configs = sorted(p.name for p in (exported / "configs").iterdir())
    assert configs == sorted(["evaluate.json", "inference.json", "logging.conf", "metadata.json",
                              "multi_gpu_train.json", "train.json"])  # fmt: skip
    assert not list(exported.rglob(".sparsessp-complete.json")) and not list(exported.rglob("__pycache__"))
    for path in exported.rglob("*.json"):
        text = path.read_text()
        assert text.endswith("}\n"), path
        if path.name != "metadata.json":  # its description names the package the code was copied from
            assert "sparsessp_monai" not in text, path  # every reference points at scripts/
    weights = tiny_run[0] / "models" / "model.pt"
    large = ConfigParser.load_config_file(exported / "large_files.yml")["large_files"]
    assert large == [
        {"path": "models/model.pt", "url": "", "hash_val": file_sha256(weights), "hash_type": "sha256"}
    ]
    assert file_sha256(exported / "models" / "model.pt") == file_sha256(weights)


def test_vendored_code_imports_only_itself(exported: Path) -> None:
    vendored = exported / "scripts"
    modules = {p.relative_to(vendored).with_suffix("").as_posix() for p in vendored.rglob("*.py")}
    assert {"networks/sparsessp_net", "transforms/array", "engines/bundle_utils", "io/reader"} <= modules
    assert not {m for m in modules if m.startswith("experiments") or m == "engines/zoo_export"}
    for path in (exported / "scripts").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "sparsessp_monai"], path
    # pip requirement strings keep the package's distribution name
    assert rename_package("import sparsessp_monai.io; pip install 'sparsessp_monai[czi]'") == (
        "import scripts.io; pip install 'sparsessp_monai[czi]'"
    )


def test_metadata_lists_public_packages_and_the_shipped_metrics(exported: Path, tiny_run: tuple[Path, str]) -> None:
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    assert set(meta["required_packages_version"]) <= PUBLIC_PACKAGES
    assert {"pytorch-ignite", "tifffile", "tqdm"} <= set(meta["required_packages_version"])
    # MONAI 1.6 reads optional_packages_version as a deprecated alias that replaces required_packages_version
    assert "optional_packages_version" not in meta and "thin_slice_ct" not in meta
    for version in (meta["monai_version"], meta["pytorch_version"], *meta["required_packages_version"].values()):
        assert re.fullmatch(r"\d+(\.\d+)+", version), version  # public release, no local "+cpu" part
    summary = read_metrics_csv(tiny_run[0] / "eval" / "metrics_per_structure.csv")["all"]
    assert meta["eval_metrics"]["val_r2_mean_over_structures"] == pytest.approx(summary["val_r2"], abs=1e-4)
    assert meta["version"] in meta["changelog"]


def test_readme_follows_the_zoo_template_with_the_shipped_metrics(exported: Path, tiny_run: tuple[Path, str]) -> None:
    readme = (exported / "docs" / "README.md").read_text()
    headings = [line.strip("# *") for line in readme.splitlines() if line.startswith("#")]
    for heading in ("Authors", "Tags", "Model Description", "Data", "Training configuration", "Performance",
                    "Weights", "System Configuration", "Limitations", "Citation Info", "TensorRT", "References"):
        assert heading in headings, heading  # fmt: skip
    assert "Thin-slice CT/MR" not in headings  # the CT configs are not exported
    assert "arXiv:2407.02159" in readme and "ECCV" in readme
    dna = read_metrics_csv(tiny_run[0] / "eval" / "metrics_per_structure.csv")["dna"]
    assert f"| dna | {int(dna['n_images'])} | {dna['val_r2']:.3f} |" in readme
    assert "not hosted anywhere yet" in readme and file_sha256(exported / "models" / "model.pt") in readme


def test_monai_checks_pass_on_the_exported_bundle_without_the_repository(exported: Path) -> None:
    meta = ["--meta_file", "configs/metadata.json"]
    proc = run_isolated(exported, "verify_metadata", *meta, "--filepath", str(SCHEMA))
    assert proc.returncode == 0 and "verified with no error" in proc.stdout, proc.stdout[-3000:]
    # as CONTRIBUTING writes it: the image alone
    proc = run_isolated(exported, "verify_net_in_out", "network_def", *meta, "--config_file", "configs/inference.json")
    assert proc.returncode == 0 and "verified with no error" in proc.stdout, proc.stdout[-3000:]
    assert f"vendored code: {exported / 'scripts' / '__init__.py'}" in proc.stdout
    ts = exported / "models" / "model.ts"
    proc = run_isolated(
        exported, "ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", "models/model.pt", *meta,
        "--config_file", "configs/inference.json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    scripted = torch.jit.load(str(ts), map_location="cpu")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(exported / "models" / "model.pt", map_location="cpu", weights_only=True))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        dna = net.eval()(x, torch.tensor([0]))
        assert torch.allclose(scripted(x), dna, atol=1e-5)  # the default structure, dna
        assert torch.allclose(scripted(x, torch.tensor([3])), net(x, torch.tensor([3])), atol=1e-5)


def test_exported_inference_runs_on_its_own_code_with_a_progress_bar(exported: Path, tiny_run: tuple[Path, str]):
    sparse = write_sparse_stacks(tiny_run[0] / "data" / "demo" / "datalist.json", exported / "sparse", ratio=4)
    proc = run_isolated(
        exported, "run", "inference", "--config_file", "configs/inference.json", "--dataset_dir", sparse,
        "--predict_structures", "['dna']", "--roi_size", "[32,64,64]", "--save_preview", "false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert PROGRESS_BAR.search(proc.stdout), proc.stdout[-3000:]
    assert len(list((exported / "output").glob("*_dna.ome.tif"))) == len(list(Path(sparse).glob("*.ome.tif")))


def test_weights_url_goes_into_large_files_and_missing_inputs_fail_briefly(exported: Path, tmp_path: Path) -> None:
    url = "https://example.org/weights/model.pt"
    metrics = exported / "docs" / "metrics_per_structure.csv"
    proc = export(tmp_path, exported / "models" / "model.pt", metrics, "--weights_url", url, "--name", "b")
    assert proc.returncode == 0, proc.stderr
    assert ConfigParser.load_config_file(tmp_path / "b" / "large_files.yml")["large_files"][0]["url"] == url
    assert url in (tmp_path / "b" / "docs" / "README.md").read_text()
    proc = export(tmp_path, tmp_path / "missing.pt", metrics, "--name", "c")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "missing.pt" in proc.stderr
    assert not (tmp_path / "c").exists()
