"""
Outputs of inference and evaluation (issue 14): unique output names, inputs never overwritten, output folder checks
before any compute (overlap with the inputs, unwritable, mount points), stale staging folders, structure names in
file names, and no NaN prediction or metric ever published. Every refusal is one ``error:`` line, a non-zero exit,
and input and output folders that hash the same before and after.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from test_metrics import STRUCTURES as METRIC_STRUCTURES
from test_metrics import make_data, make_evaluator

from sparsessp_monai.data.inputs import build_inference_datalist, check_name_part, output_names
from sparsessp_monai.data.synthetic_ct import make_ct_phantom, save_nifti
from sparsessp_monai.engines import BundleInputError
from sparsessp_monai.handlers import PerStructureMetricsSaver, PublishOutputs, ThinSliceComparison
from sparsessp_monai.handlers.publish import STAGING_NAME, process_alive
from sparsessp_monai.io import read_ome_tiff, write_ome_tiff
from sparsessp_monai.transforms import SavePredictiond

INFER = "bundle/configs/inference.json"
CT_INFER = "['bundle/configs/inference.json','bundle/configs/ct_inference.json']"


def folder_digest(path: Path) -> str:
    """SHA-256 of every entry below ``path`` (hidden ones included): relative names, kinds and file contents;
    ``"missing"`` when ``path`` does not exist."""
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    entries = [path] if path.is_file() else sorted(path.rglob("*"))
    for entry in entries:
        h.update(str(entry.relative_to(path) if entry != path else entry.name).encode() + b"\0")
        h.update(entry.read_bytes() if entry.is_file() else b"<dir>")
    return h.hexdigest()


def write_stack(path: Path, seed: int = 0) -> Path:
    """A small sparse OME-TIFF stack: 8 slices 1.16 um apart (ratio 4 to 0.29 um), 64 x 64 pixels."""
    data = np.random.default_rng(seed).random((1, 8, 64, 64), dtype=np.float32)
    write_ome_tiff(path, data, spacing_zyx=(1.16, 0.29, 0.29))
    return path


def save_model(config: str | list[str], path: Path, nan: bool = False) -> None:
    """A randomly initialised model of ``config``'s ``network_def`` (one weight NaN with ``nan``) at ``path``."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in ([config] if isinstance(config, str) else config)])
    parser["roi_size"] = [32, 64, 64] if isinstance(config, str) else [32, 32, 32]
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    if nan:
        with torch.no_grad():
            next(net.parameters()).view(-1)[0] = float("nan")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle root with random microscopy and CT models (predictions are finite, not meaningful)."""
    folder = tmp_path_factory.mktemp("bundle_root")
    save_model("inference.json", folder / "models" / "model.pt")
    save_model(["inference.json", "ct_inference.json"], folder / "models" / "ct" / "model.pt")
    return folder


@pytest.fixture
def infer(run_bundle):
    """``inference.json`` from bundle ``root`` on ``inputs`` into ``out`` (small ROI, one structure)."""

    def run(root: Path, inputs: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
        return run_bundle(
            "inference", "--config_file", INFER, "--bundle_root", str(root), "--dataset_dir", str(inputs),
            "--output_dir", str(out), "--roi_size", "[32,64,64]", "--predict_structures", "['dna']", *extra,
        )  # fmt: skip

    return run


def assert_refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    """One ``error:`` line holding every word, no traceback, non-zero exit."""
    assert proc.returncode != 0, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stdout[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    assert "Traceback" not in proc.stdout, proc.stdout[-3000:]


def staging_of(out: Path, pid: int) -> Path:
    """A staging folder name of this machine in ``out``, as process ``pid`` would have made it."""
    host = STAGING_NAME.match(Path(PublishOutputs.make_staging_dir(out)).name)["host"]
    return out / f".outputs@{host}.staging-{pid}-{uuid.uuid4().hex[:8]}"


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def staged(folder: Path) -> list[Path]:
    """Staging folders (any scheme) in ``folder`` and beside it."""
    return [*folder.glob(".*staging*"), *folder.parent.glob(f".{folder.name}.staging-*")]


# --- 3: same-stem inputs ----------------------------------------------------------------------------------------


def test_same_stem_inputs_get_unique_output_names() -> None:
    names = output_names(["/d/cell.ome.tif", "/d/cell.tif", "/d/cell.nii.gz", "/d/other.tif", "/d/a.b.tif"])
    assert names == ["cell_ome_tif", "cell_tif", "cell_nii_gz", "other", "a.b"]
    # compared ignoring case (as on macOS / Windows disks): both keep their suffix, and still clash -> refused
    with pytest.raises(BundleInputError, match=r"'/d/Cell\.tif' and '/d/cell\.tif' would write outputs"):
        output_names(["/d/Cell.tif", "/d/cell.tif"])


def test_prediction_names_that_still_clash_are_refused(tmp_path: Path) -> None:
    for name in ("a.tif", "a_b.tif"):
        (tmp_path / name).write_bytes(b"")
    items = build_inference_datalist(tmp_path, ["c"], ["c", "b_c"])
    assert [i["output_name"] for i in items] == ["a", "a_b"]
    with pytest.raises(BundleInputError, match=r"a\.tif \(b_c\)' and '.*a_b\.tif \(c\)' would write predictions"):
        build_inference_datalist(tmp_path, ["c", "b_c"], ["c", "b_c"])


def test_same_stem_inputs_all_get_predictions_and_previews(infer, root: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    for i, name in enumerate(("cell.ome.tif", "cell.tif", "cell.tiff")):
        write_stack(inputs / name, seed=i)
    before = folder_digest(inputs)
    out = tmp_path / "out"
    proc = infer(root, inputs, out)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "wrote 6 file(s)" in proc.stdout
    for stem in ("cell_ome_tif", "cell_tif", "cell_tiff"):
        assert (out / f"{stem}_dna.ome.tif").is_file() and (out / f"{stem}_dna_preview.png").is_file()
    preds = {p.name: read_ome_tiff(p)[0] for p in out.glob("*.ome.tif")}
    assert len(preds) == 3 and not np.allclose(preds["cell_tif_dna.ome.tif"], preds["cell_tiff_dna.ome.tif"])
    assert folder_digest(inputs) == before
    assert not staged(out)


# --- 4 / 5: outputs and inputs never mix ------------------------------------------------------------------------


def test_ct_inference_refuses_outputs_that_would_land_on_its_inputs(run_bundle, root: Path, tmp_path: Path) -> None:
    data = tmp_path / "ct"
    data.mkdir()
    vol = make_ct_phantom(0, shape=(32, 32, 8), spacing=(3.0, 3.0, 4.0))
    save_nifti(data / "vol.nii.gz", vol, (3.0, 3.0, 4.0))
    save_nifti(data / "vol_thin.nii.gz", vol[::-1].copy(), (3.0, 3.0, 4.0))  # what vol.nii.gz's output is named
    before = folder_digest(data)
    proc = run_bundle(
        "inference", "--config_file", CT_INFER, "--bundle_root", str(root), "--dataset_dir", str(data),
        "--output_dir", str(data), "--roi_size", "[32,32,32]",
    )  # fmt: skip
    assert_refused(proc, str(data), "is the input folder")
    assert folder_digest(data) == before
    # the CT overlay keeps the inputs of PublishOutputs: a staged output named like an input is never moved
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "ct_inference.json")])
    parser.update({"bundle_root": str(root), "dataset_dir": str(data), "output_dir": str(tmp_path / "o")})
    publisher = parser.get_parsed_content("handlers")[0]
    assert isinstance(publisher, PublishOutputs) and (data / "vol_thin.nii.gz").resolve() in publisher.inputs
    publisher.output_dir = data
    (publisher.staging_dir / "vol_thin.nii.gz").parent.mkdir(parents=True)
    (publisher.staging_dir / "vol_thin.nii.gz").write_bytes(b"prediction")
    with pytest.raises(BundleInputError, match="refusing to overwrite input"):
        publisher.publish()
    assert folder_digest(data) == before


def test_output_dir_equal_to_the_input_folder_is_refused_before_compute(
    infer, tmp_path: Path, run_bundle
) -> None:
    inputs = tmp_path / "in"
    write_stack(inputs / "a.ome.tif")
    before = folder_digest(inputs)
    # no model in this bundle root: a refusal that names the folder came before the checkpoint was even loaded
    proc = infer(tmp_path / "no_model", inputs, inputs)
    assert_refused(proc, str(inputs), "is the input folder")
    assert folder_digest(inputs) == before


@pytest.mark.parametrize("where", ["inside", "contains", "holds_file"])
def test_output_dir_inside_or_containing_the_inputs_is_refused(tmp_path: Path, where: str) -> None:
    inputs = write_stack(tmp_path / "data" / "in" / "a.ome.tif").parent
    out, dataset = {
        "inside": (inputs / "pred", inputs),
        "contains": (tmp_path / "data", inputs),
        "holds_file": (inputs, inputs / "a.ome.tif"),  # a single input file, output beside it
    }[where]
    before = folder_digest(tmp_path)
    publisher = PublishOutputs(PublishOutputs.make_staging_dir(out), out, [str(inputs / "a.ome.tif")], dataset)
    word = {"inside": "is inside the input folder", "contains": "contains the input folder"}.get(where, "holds the")
    with pytest.raises(BundleInputError, match=word):
        publisher.prepare()
    assert folder_digest(tmp_path) == before


# --- 7: no NaN published ----------------------------------------------------------------------------------------


def test_nan_predictions_are_never_published(infer, tmp_path: Path) -> None:
    nan_root = tmp_path / "diverged"
    save_model("inference.json", nan_root / "models" / "model.pt", nan=True)
    inputs = tmp_path / "in"
    write_stack(inputs / "a.ome.tif")
    out = tmp_path / "out"
    proc = infer(nan_root, inputs, out, "--save_preview", "false")
    assert_refused(proc, "a.ome.tif", "NaN or infinite")
    assert folder_digest(out) == "missing" and not staged(out)


@pytest.mark.parametrize("preview", [False, True])
def test_save_prediction_refuses_non_finite_values_before_writing(tmp_path: Path, preview: bool) -> None:
    pred = MetaTensor(torch.zeros(1, 4, 8, 8), meta={"filename_or_obj": "/data/cell.tif"})
    pred[0, 1, 2, 3] = float("inf")
    save = SavePredictiond("pred", tmp_path / "staging", save_preview=preview)
    with pytest.raises(BundleInputError, match=r"/data/cell\.tif: the 'dna' prediction has 1 NaN or infinite"):
        save({"pred": pred, "structure": "dna", "output_name": "cell"})
    assert folder_digest(tmp_path / "staging") == "missing"


@pytest.mark.parametrize("decollate", [True, False])
def test_evaluation_never_replaces_good_metrics_with_nan_rows(tmp_path: Path, decollate: bool) -> None:
    data = make_data()
    report = tmp_path / "report"
    evaluator = make_evaluator(data, PerStructureMetricsSaver(METRIC_STRUCTURES, save_dir=str(report)), decollate)
    evaluator.run()
    good = folder_digest(report)
    evaluator.network.bias[1] = float("nan")  # a diverged model for one structure
    with pytest.raises(BundleInputError) as err:
        evaluator.run()
    bad = [d["image"].meta["filename_or_obj"] for d in data if d["task"] == 1]
    assert f"metrics of {len(bad)} image(s) are not finite" in str(err.value)
    assert all(name in str(err.value) for name in bad) and "left unchanged" in str(err.value)
    assert folder_digest(report) == good


def test_thin_slice_comparison_never_replaces_reports_with_nan_rows(tmp_path: Path) -> None:
    from ignite.engine import Engine

    (tmp_path / "thin_slice_per_volume.csv").write_text("filename\ngood.nii.gz\n")
    before = folder_digest(tmp_path)
    label = MetaTensor(torch.zeros(1, 8, 4, 4), meta={"filename_or_obj": "/data/ct_007.nii.gz"})
    batch = [{"label": label, "image": label.clone(), "trilinear": label.clone(), "cubic": label.clone()}]
    engine = Engine(lambda e, b: [{"pred": torch.full((1, 8, 4, 4), float("nan"))}])
    ThinSliceComparison(tmp_path).attach(engine)
    with pytest.raises(BundleInputError, match=r"1 volume\(s\) is not finite.*/data/ct_007\.nii\.gz"):
        engine.run([batch], max_epochs=1)
    assert folder_digest(tmp_path) == before


# --- 10: structure names are file-name parts --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", ".hidden", "", " dna", "a:b"])
def test_structure_names_with_path_characters_are_refused(name: str) -> None:
    with pytest.raises(BundleInputError, match="cannot be used in output file names"):
        check_name_part(name)


def test_structure_name_that_would_leave_the_output_folder_is_refused(infer, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    write_stack(inputs / "a.ome.tif")
    before = folder_digest(tmp_path)
    proc = infer(
        tmp_path / "no_model", inputs, tmp_path / "out", "--structures", "['dna','../../evil']",
        "--predict_structures", "['../../evil']",
    )  # fmt: skip
    assert_refused(proc, "'../../evil'", "cannot be used in output file names")
    assert folder_digest(tmp_path) == before


# --- 11: an output folder that is a mount point -----------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(folder: Path, *options: str) -> Iterator[Path]:
    """A fresh tmpfs mounted at ``folder`` (skips the test where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    opts = ",".join(("size=64m", *options))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_inference_into_a_mount_point_publishes(infer, root: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    write_stack(inputs / "a.ome.tif")
    with tmpfs(tmp_path / "mnt") as out:
        proc = infer(root, inputs, out, "--save_preview", "false")
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert [p.name for p in out.iterdir()] == ["a_dna.ome.tif"]


def test_staging_is_on_the_file_system_of_the_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "volume"
    replace = os.replace

    def cross_device(src, dst):  # out is its own file system: only renames within it work
        if (out in Path(src).parents) != (out in Path(dst).parents):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", cross_device)
    publisher = PublishOutputs(PublishOutputs.make_staging_dir(out), out)
    publisher.prepare()
    publisher.staging_dir.mkdir(parents=True)
    (publisher.staging_dir / "a_dna.ome.tif").write_bytes(b"prediction")
    publisher.publish()
    assert [p.name for p in out.iterdir()] == ["a_dna.ome.tif"]


# --- 12: unwritable output folders ------------------------------------------------------------------------------


def test_output_dir_that_is_a_file_is_refused_before_compute(infer, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    write_stack(inputs / "a.ome.tif")
    (tmp_path / "out").write_text("a file")
    before = folder_digest(tmp_path)
    proc = infer(tmp_path / "no_model", inputs, tmp_path / "out" / "pred")
    assert_refused(proc, str(tmp_path / "out"), "is a file, not a folder")
    assert folder_digest(tmp_path) == before


def test_read_only_output_dir_is_refused(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro") as out:
        before = folder_digest(out)
        for target in (out, out / "sub"):
            with pytest.raises(BundleInputError, match="not writable"):
                PublishOutputs(PublishOutputs.make_staging_dir(target), target).prepare()
        assert folder_digest(out) == before


def test_output_dir_without_write_permission_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user would see a 0555 folder
    with pytest.raises(BundleInputError, match=f"output folder '{out}' is not writable"):
        PublishOutputs(PublishOutputs.make_staging_dir(out), out).prepare()


# --- 13: staging folders of killed runs -------------------------------------------------------------------------


def test_stale_staging_folders_of_dead_processes_are_removed_and_only_those(tmp_path: Path) -> None:
    out = tmp_path / "out"
    gone = dead_pid()
    assert not process_alive(gone)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale, alive = staging_of(out, gone), staging_of(out, live.pid)
        other_host = out / f".outputs@elsewhere.staging-{gone}-0000abcd"
        keep = [alive, other_host, out / ".mine", out / "result_dna.ome.tif.staging-1-0000abcd"]
        for folder in (stale, *keep):
            folder.mkdir(parents=True)
            (folder / "x_dna.ome.tif").write_bytes(b"partial")
        publisher = PublishOutputs(PublishOutputs.make_staging_dir(out), out)
        publisher.prepare()
        assert not stale.exists()
        assert all(folder.is_dir() for folder in keep)
    finally:
        live.kill()
        live.wait()


def test_inference_removes_a_killed_runs_staging_folder(infer, root: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    write_stack(inputs / "a.ome.tif")
    out = tmp_path / "out"
    stale = staging_of(out, dead_pid())
    stale.mkdir(parents=True)
    (stale / "a_dna.ome.tif").write_bytes(uuid.uuid4().bytes)
    proc = infer(root, inputs, out, "--save_preview", "false")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["a_dna.ome.tif"]
