"""
The real chest CT of ../shared/data/ct through scripts/ct_heldout.py: the slab split (disjoint, with its gap, exact
world affines, either end), NRRD volumes read with their world affine, and the whole train-then-evaluate command on an
in-plane crop of the real volume, with an extra training volume and an external volume (NRRD) scored by the same
model.
Skips with the reason where ../shared/data is absent.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHEST = REPO.parent / "shared" / "data" / "ct" / "chest_ct_2mm_141sl_HU.nii.gz"
_spec = importlib.util.spec_from_file_location("ct_heldout", REPO / "scripts" / "ct_heldout.py")
ct_heldout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ct_heldout)

pytestmark = pytest.mark.skipif(not CHEST.is_file(), reason=f"real chest CT not available: {CHEST}")


def _superior_mm(img: nib.Nifti1Image) -> np.ndarray:
    """World S coordinate (mm, RAS+) of every axial slice, in storage order."""
    axis = next(i for i, c in enumerate(nib.aff2axcodes(img.affine)) if c in ("S", "I"))
    index = np.zeros((img.shape[axis], 4))
    index[:, axis] = np.arange(img.shape[axis])
    index[:, 3] = 1
    return (img.affine @ index.T)[2]


@pytest.fixture(scope="module")
def chest_crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 x 128 in-plane crop (125 mm, around the mediastinum) of the real volume, all 141 slices: keeps the
    commands short."""
    full = nib.load(str(CHEST))
    crop = full.slicer[192:320, 192:320, :]
    path = tmp_path_factory.mktemp("chest") / "chest_crop.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(crop.dataobj, dtype=np.int16), crop.affine), str(path))
    return path


@pytest.mark.parametrize("side", ["inferior", "superior"])
def test_slabs_are_disjoint_real_slices_with_the_gap(chest_crop: Path, tmp_path: Path, side: str) -> None:
    datalist = ct_heldout.write_slabs(chest_crop, tmp_path, train_slices=90, gap=8, ratio=4, train_side=side)
    assert datalist == {"training": [{"image": "train.nii.gz"}], "validation": [{"image": "heldout.nii.gz"}]}
    full = nib.load(str(chest_crop))
    train, held = nib.load(str(tmp_path / "train.nii.gz")), nib.load(str(tmp_path / "heldout.nii.gz"))
    z_full, z_train, z_held = _superior_mm(full), _superior_mm(train), _superior_mm(held)
    assert len(z_train) == 90 and len(z_held) == 40  # 141 - 98 = 43 slices, trimmed to a multiple of 4
    # the gap: 8 slices of 2 mm between the slabs, the training slab at the requested end
    if side == "inferior":
        assert z_held.min() - z_train.max() == pytest.approx(9 * 2.0, abs=1e-3)
        assert z_train.min() == pytest.approx(z_full.min(), abs=1e-3)
    else:
        assert z_train.min() - z_held.max() == pytest.approx(9 * 2.0, abs=1e-3)
        assert z_train.max() == pytest.approx(z_full.max(), abs=1e-3)
    # every slab slice is the real slice at the same world position
    data = np.asarray(full.dataobj)
    axis = next(i for i, c in enumerate(nib.aff2axcodes(full.affine)) if c in ("S", "I"))
    for slab, z in ((train, z_train), (held, z_held)):
        assert nib.aff2axcodes(slab.affine) == nib.aff2axcodes(full.affine)
        src = [int(np.argmin(np.abs(z_full - zi))) for zi in z]
        np.testing.assert_array_equal(np.asarray(slab.dataobj), np.take(data, src, axis=axis))


def _write_nrrd_lps(img: nib.Nifti1Image, path: Path) -> None:
    """``img`` as an NRRD file in LPS space, the way 3D Slicer and pyradiomics store CT (RAS -> LPS: negate the
    first two world axes)."""
    import nrrd

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    header = {"space": "left-posterior-superior", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]}
    nrrd.write(str(path), np.asarray(img.dataobj), header)


def test_nrrd_volume_reads_as_the_same_array_and_world_affine(chest_crop: Path, tmp_path: Path) -> None:
    pytest.importorskip("nrrd", reason="pynrrd is not installed (pip install -e '.[test]')")
    img = nib.load(str(chest_crop)).slicer[:, :, 20:60]
    _write_nrrd_lps(img, tmp_path / "crop.nrrd")
    back = ct_heldout.read_volume(tmp_path / "crop.nrrd")
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj))
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-6)
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(img.affine)


def test_heldout_command_trains_and_scores_model_against_both_interpolations(
    chest_crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("nrrd", reason="pynrrd is not installed (pip install -e '.[test]')")
    work = tmp_path / "work"
    # an "external" volume: the superior 41 slices, cropped elsewhere in-plane, as NRRD; trimmed to 40 for r = 2
    full = nib.load(str(CHEST))
    _write_nrrd_lps(full.slicer[256:352, 160:256, 100:], tmp_path / "other_ct.nrrd")
    # an extra training volume: the inferior 40 slices of yet another in-plane crop, as NRRD
    extra = full.slicer[100:196, 300:396, :40]
    _write_nrrd_lps(extra, tmp_path / "more_ct.nrrd")
    argv = ["--volume", str(chest_crop), "--work_dir", str(work), "--modality", "CT", "--ratio", "2",
            "--train_slices", "90", "--gap", "8", "--epochs", "2", "--epoch_length", "1", "--samples", "1",
            "--patch", "16", "32", "32", "--loss", "mse+ssim", "--prefix_mode", "cubic",
            "--external", str(tmp_path / "other_ct.nrrd"), "--train_extra", str(tmp_path / "more_ct.nrrd"),
            "--tta_flip_axes", "2"]  # fmt: skip
    assert ct_heldout.main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out slab, ratio 2" in out and "model vs cubic (missing slices" in out
    assert "beats both interpolations on PSNR, SSIM and MAE: " in out
    result = json.loads((work / "result.json").read_text())
    assert result["overrides"]["train#trainer#max_epochs"] == 2 and result["overrides"]["min_epoch_length"] == 1
    assert set(result["margins_missing"]) == {"trilinear", "cubic"}
    assert "prefix_mode" not in result["overrides"]  # set for both commands, not as a training override
    assert result["scoring_overrides"] == {"tta_flip_axes": [2]}  # the evaluations' mirrors: along L-R only
    # the extra volume joined the training split whole, with its world affine, and is never scored
    assert result["training_volumes"] == ["train.nii.gz", "train_more_ct.nii.gz"]
    more = nib.load(str(work / "data" / "train_more_ct.nii.gz"))
    np.testing.assert_array_equal(np.asarray(more.dataobj), np.asarray(extra.dataobj))
    np.testing.assert_allclose(more.affine, extra.affine, atol=1e-6)
    assert "also trained on" in out and "more_ct" in out
    summary = json.loads((work / "bundle" / "eval" / "ct" / "thin_slice_summary.json").read_text())
    for method in ("model", "trilinear", "cubic"):
        assert 15 < summary[f"{method}_psnr_missing"] < 60
        assert 0 < summary[f"{method}_ssim_missing"] <= 1
        assert 0 < summary[f"{method}_mae_missing"] < 300  # HU
    # the final weights of the two epochs were evaluated, not a checkpoint selected on the held-out slab
    assert (work / "bundle" / "models" / "ct" / "checkpoint_final.pt").is_file()
    assert not (work / "bundle" / "models" / "ct" / "model.pt").exists()
    # the external volume: written whole (trimmed to a multiple of r) and scored by the same final weights
    other = nib.load(str(work / "external" / "other_ct.nii.gz"))
    assert other.shape == (96, 96, 40)
    np.testing.assert_allclose(other.affine, full.slicer[256:352, 160:256, 100:140].affine, atol=1e-6)
    assert "external volume other_ct (whole, missing slices)" in out
    ext = result["external"]["other_ct"]
    assert set(ext["margins"]) == {"trilinear", "cubic"} and isinstance(ext["beats_both"], bool)
    for method in ("model", "trilinear", "cubic"):
        assert 15 < ext[method]["psnr"] < 60 and 0 < ext[method]["ssim"] <= 1 and 0 < ext[method]["mae"] < 300
    assert ext["margins"]["cubic"]["psnr"] == pytest.approx(ext["model"]["psnr"] - ext["cubic"]["psnr"])
    per_volume = (work / "bundle" / "eval" / "ct_external" / "thin_slice_per_volume.csv").read_text()
    assert "other_ct.nii.gz" in per_volume and "heldout.nii.gz" not in per_volume


def test_heldout_command_refuses_a_missing_volume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert ct_heldout.main(["--volume", str(tmp_path / "absent.nii.gz"), "--work_dir", str(tmp_path / "w")]) == 2
    assert "absent.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_heldout_command_refuses_an_unreadable_external_volume_and_leaves_nothing(
    chest_crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("nrrd", reason="pynrrd is not installed (pip install -e '.[test]')")
    bad = tmp_path / "broken.nrrd"
    bad.write_text("not an NRRD file\n")
    argv = ["--volume", str(chest_crop), "--work_dir", str(tmp_path / "w"), "--train_slices", "90",
            "--external", str(bad)]  # fmt: skip
    assert ct_heldout.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.nrrd" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w").exists() and bad.read_text() == "not an NRRD file\n"


def test_heldout_command_refuses_a_volume_both_trained_on_and_scored(
    chest_crop: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--volume", str(chest_crop), "--work_dir", str(tmp_path / "w"), "--train_slices", "90",
            "--external", str(chest_crop), "--train_extra", str(chest_crop)]  # fmt: skip
    assert ct_heldout.main(argv) == 2
    err = capsys.readouterr().err
    assert "both a training and an external volume" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w").exists()
