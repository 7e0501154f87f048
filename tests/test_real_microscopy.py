"""
Real microscopy end to end: the StarDist nuclei stack from ../shared/data made into a genuinely sparse acquisition
(only every 4th slice kept, z-step on file), predicted with the inference bundle from the command line, with the
outputs checked as a user would open them (OME-TIFF sizes, NIfTI affine read back with nibabel, PNG preview);
z-steps from the command line for files without one, and inconsistent inputs refused. Also the AllenCell
preparation pipeline run on the same real stack as a single-channel image.

The network is untrained (a saved state dict of the bundle's network_def): these tests check the data path, not
prediction quality.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from sparsessp_monai.data.allencell import prepare_allencell, resample_xy, zscore
from sparsessp_monai.handlers import PublishOutputs
from sparsessp_monai.io import read_ome_tiff, spacing_to_affine, write_ome_tiff
from sparsessp_monai.transforms import ResolveZRatiod

REPO = Path(__file__).resolve().parent.parent
STARDIST = REPO.parent / "shared" / "data" / "microscopy" / "stardist_img3d.tif"
INFERENCE = "bundle/configs/inference.json"
RATIO, TARGET_Z = 4, 0.29
ROI = "[32,64,64]"


@pytest.fixture(scope="module")
def full_stack() -> np.ndarray:
    """The real (1, 32, 61, 57) stack: StarDist's 31 slices plus the last one repeated, so that 8 slices at ratio 4
    rebuild exactly this depth."""
    if not STARDIST.is_file():
        pytest.skip(f"real microscopy stack not available: {STARDIST} (see ../shared/data/README.md)")
    data, _ = read_ome_tiff(STARDIST)
    assert data.shape == (1, 31, 61, 57)
    return np.concatenate([data, data[:, -1:]], axis=1)


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle root whose models/model.pt is an untrained state dict of the inference network (depth 32)."""
    root = tmp_path_factory.mktemp("real_bundle")
    parser = ConfigParser()
    parser.read_config(str(REPO / INFERENCE))
    parser["roi_size"] = [32, 64, 64]
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def infer(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", INFERENCE]
    cmd += ["--bundle_root", str(root), "--roi_size", ROI, "--output_dir", str(out), *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def png_size(path: Path) -> tuple[int, int]:
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n" and blob[12:16] == b"IHDR"
    width, height = struct.unpack(">II", blob[16:24])
    return width, height


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def assert_nothing_written(out: Path) -> None:
    assert not out.exists(), "a failed run must not publish anything"
    assert not list(out.parent.glob(f".{out.name}.staging-*")), "nor leave its staging folder"


def test_real_sparse_stack_to_ome_tiff_with_preview_of_input_prediction_target(
    full_stack: np.ndarray, bundle_root: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    sparse = write_ome_tiff(inputs / "nuclei.ome.tif", full_stack[:, ::RATIO], (RATIO * TARGET_Z, 0.29, 0.29))
    target = write_ome_tiff(inputs / "nuclei_target.ome.tif", full_stack, (TARGET_Z, 0.29, 0.29))
    before = digest(inputs)
    out = tmp_path / "predictions"
    datalist = f"[{{'image': '{sparse}', 'label': '{target}', 'structure': 'dna'}}]"
    proc = infer(bundle_root, out, "--datalist", datalist)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    assert read_ome_tiff(sparse)[0].shape == (1, 8, 61, 57)
    pred, meta = read_ome_tiff(out / "nuclei_dna.ome.tif")
    assert pred.shape == (1, 32, 61, 57) and pred.dtype == np.float32 and np.isfinite(pred).all()
    assert meta["spacing_zyx"] == pytest.approx((0.29, 0.29, 0.29)) and meta["channel_names"] == ["dna"]
    # preview: input | prediction | target, each XY (61x57) + XZ below + YZ right (32 px at isotropic spacing)
    panel_w, panel_h = 57 + 2 + 32, 61 + 2 + 32
    assert png_size(out / "nuclei_dna_preview.png") == (3 * panel_w + 2 * 6, panel_h)
    assert sorted(p.name for p in out.iterdir()) == ["nuclei_dna.ome.tif", "nuclei_dna_preview.png"]
    assert digest(inputs) == before, "inputs are never written"
    assert not list(tmp_path.glob(".predictions.staging-*"))


def test_nifti_output_has_the_thin_slice_affine_at_the_first_acquired_slice(
    full_stack: np.ndarray, bundle_root: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # a NIfTI in its conventional (X, Y, Z) layout: depth is the third voxel axis, the world's z
    affine = np.diag([0.29, 0.29, RATIO * TARGET_Z, 1.0])
    affine[:3, 3] = [12.5, -4.0, 3.25]
    xyz = np.ascontiguousarray(full_stack[0, ::RATIO].transpose(2, 1, 0)).astype(np.float32)
    nib.save(nib.Nifti1Image(xyz, affine), inputs / "nuclei.nii.gz")
    out = tmp_path / "nifti"
    proc = infer(bundle_root, out, "--dataset_dir", str(inputs), "--predict_structures", "['dna']",
                 "--output_format", "nii.gz")  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    img = nib.load(out / "nuclei_dna.nii.gz")
    assert img.shape == (57, 61, 32), "written back in the input's (X, Y, Z) layout"
    expected = np.diag([0.29, 0.29, TARGET_Z, 1.0])
    expected[:3, 3] = [12.5, -4.0, 3.25]  # voxel 0 of the full grid is the first acquired slice
    np.testing.assert_allclose(img.affine, expected, atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), (0.29, 0.29, TARGET_Z), atol=1e-6)
    # the preview is drawn from the arrays in the file's voxel layout (input | prediction)
    assert (out / "nuclei_dna_preview.png").is_file()


def test_z_step_from_the_command_line_for_files_without_one(
    full_stack: np.ndarray, bundle_root: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "plain"
    inputs.mkdir()
    tifffile.imwrite(inputs / "nuclei.tif", full_stack[0, ::RATIO])  # no voxel size at all
    out = tmp_path / "out"
    proc = infer(bundle_root, out, "--dataset_dir", str(inputs), "--predict_structures", "['dna']")
    assert proc.returncode != 0
    assert "records no z-step" in proc.stderr and "'z_step'" in proc.stderr
    assert_nothing_written(out)

    proc = infer(bundle_root, out, "--dataset_dir", str(inputs), "--predict_structures", "['dna']",
                 "--z_step", str(RATIO * TARGET_Z), "--save_preview", "false")  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    pred, meta = read_ome_tiff(out / "nuclei_dna.ome.tif")
    assert pred.shape == (1, 32, 61, 57)
    # Z comes from --z_step / ratio; X and Y stay unknown because the file does not say
    assert meta["spacing_zyx"][0] == pytest.approx(TARGET_Z) and meta["spacing_zyx"][1:] == (None, None)
    assert not list(out.glob("*.png")), "--save_preview false"


def sparse_tensor(n: int, z_step: float | None) -> MetaTensor:
    img = MetaTensor(torch.rand(1, n, 8, 8), affine=torch.as_tensor(spacing_to_affine((z_step or 1.0, 0.29, 0.29))))
    img.meta["filename_or_obj"] = "stack.tif"
    img.meta["spacing_known_zyx"] = np.array([z_step is not None, True, True])
    return img


def test_resolve_ratio_errors_name_the_file_and_the_problem() -> None:
    with pytest.raises(ValueError, match=r"stack\.tif: too few slices: 1 acquired"):
        ResolveZRatiod("image", target_z_step=0.29)({"image": sparse_tensor(1, 1.16)})
    with pytest.raises(ValueError, match=r"stack\.tif: acquired z-step 1\.0 is not an integer multiple"):
        ResolveZRatiod("image", target_z_step=0.29, z_step=1.0)({"image": sparse_tensor(4, None)})
    with pytest.raises(ValueError, match=r"records a z-step of 1\.16 but z_step 0\.87 was configured"):
        ResolveZRatiod("image", target_z_step=0.29, z_step=0.87)({"image": sparse_tensor(4, 1.16)})
    with pytest.raises(ValueError, match="ratio 2 was configured"):
        ResolveZRatiod("image", target_z_step=0.29, ratio=2)({"image": sparse_tensor(4, 1.16)})
    with pytest.raises(ValueError, match="gives ratio 4, but ratio 3"):
        ResolveZRatiod("image", ratio=3, z_step=1.16, target_z_step=0.29)
    img = sparse_tensor(4, None)
    out = ResolveZRatiod("image", target_z_step=0.29, z_step=1.16)({"image": img})
    assert out["ratio"] == 4 and float(out["image"].affine[0, 0]) == pytest.approx(1.16)
    assert float(img.affine[0, 0]) == 1.0, "the input tensor is not modified"


def test_outputs_that_would_replace_an_input_are_refused_before_anything_moves(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "cell.ome.tif").write_bytes(b"input")
    (folder / "cell_dna.ome.tif").write_bytes(b"another input")
    staging = tmp_path / ".staging"
    staging.mkdir()
    (staging / "cell_dna.ome.tif").write_bytes(b"prediction")
    (staging / "cell_dna_preview.png").write_bytes(b"png")
    publisher = PublishOutputs(staging, folder, inputs=[{"image": str(folder / f)} for f in sorted(os.listdir(folder))])
    with pytest.raises(ValueError, match="refusing to overwrite input"):
        publisher.publish()
    assert (folder / "cell_dna.ome.tif").read_bytes() == b"another input"
    assert not (folder / "cell_dna_preview.png").exists()


def test_prepare_pipeline_on_the_real_stack_as_a_single_channel_image(full_stack: np.ndarray, tmp_path: Path):
    raw = tmp_path / "raw"
    write_ome_tiff(raw / "nuclei" / "stardist.ome.tif", full_stack[:, :31], (0.29, 0.108, 0.108))
    (raw / "nuclei.csv").write_text("path_czi,channel_signal,channel_target\nnuclei/stardist.ome.tif,0,0\n")
    out = tmp_path / "prepared"
    datalist = prepare_allencell([raw / "nuclei.csv"], out)
    item = __import__("json").loads(datalist.read_text())["training"][0]  # 1 image: round(0.75) -> train
    signal, meta = read_ome_tiff(out / item["image"])
    assert signal.shape == (1, 31, round(61 * 0.108 / 0.29), round(57 * 0.108 / 0.29)) == (1, 31, 23, 21)
    assert meta["spacing_zyx"] == pytest.approx((0.29, 0.29, 0.29))
    np.testing.assert_allclose(signal[0], resample_xy(zscore(full_stack[0, :31]), 0.108), atol=1e-6)
    # z-scored before resampling (RepMode's order): still centred, spread only slightly reduced by anti-aliasing
    assert abs(float(signal.mean())) < 0.05 and 0.8 < float(signal.std()) < 1.0
