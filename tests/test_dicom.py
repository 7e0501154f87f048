"""DICOM series folders as CT inputs: the real chest CT as DICOM and as NIfTI give the same volume through the CT
configs' loading, and broken series folders are refused with one line naming the folder and the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, REPO
from monai.bundle import ConfigParser
from monai.data.utils import affine_to_spacing

from sparsessp_monai.data import build_inference_datalist
from sparsessp_monai.engines import BundleInputError, find_input_error

pydicom = pytest.importorskip("pydicom", reason="DICOM needs the 'dicom' extra (pydicom)")

CT = REPO.parent / "shared" / "data" / "ct"
SERIES = CT / "chest_ct_2mm_141sl_dicom"
NIFTI = CT / "chest_ct_2mm_141sl_HU.nii.gz"
needs_ct = pytest.mark.skipif(not SERIES.is_dir(), reason=f"real CT not found at {CT} (../shared/data)")


def ct_loader():
    """The load transforms of the CT inference config (reader choice, checks, SPL orientation), HU window off."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "ct_inference.json")])
    from monai.transforms import Compose

    # CheckDicomSeriesd, LoadImaged, CheckVolumed, Orientationd
    return Compose(parser.get_parsed_content("load_transforms")[:4])


def small_series(tmp_path: Path, keep: slice = slice(0, 12)) -> Path:
    """A copy of the first slices of the real series (sorted by file name = by slice position)."""
    folder = tmp_path / "series"
    folder.mkdir()
    for path in sorted(SERIES.iterdir())[keep]:
        shutil.copy(path, folder / path.name)
    return folder


@needs_ct
def test_dicom_series_and_nifti_of_the_same_ct_load_alike() -> None:
    load = ct_loader()
    dicom = load({"image": str(SERIES)})["image"]
    nifti = load({"image": str(NIFTI)})["image"]
    assert dicom.shape == nifti.shape == (1, 141, 512, 512)  # (C, S, P, L): axial slices first
    # the NIfTI was written from the same pixels with an identity direction, so its in-plane axes are stored
    # flipped relative to the DICOM patient frame: the known convention difference, nothing else differs
    np.testing.assert_array_equal(dicom.numpy(), np.flip(nifti.numpy(), (2, 3)))
    np.testing.assert_allclose(affine_to_spacing(dicom.affine, r=3).numpy(), [2.0, 0.9765625, 0.9765625])
    np.testing.assert_allclose(dicom.affine.numpy()[:3, :3], nifti.affine.numpy()[:3, :3])
    assert float(dicom.min()) == -1024 and float(dicom.max()) > 1000  # HU from the DICOM rescale tags


@needs_ct
def test_inference_datalist_takes_a_series_folder_or_a_folder_of_series(tmp_path: Path) -> None:
    series = small_series(tmp_path)
    items = build_inference_datalist(series, ["thin"], ["thin"])
    assert [(Path(i["image"]).name, i["output_name"]) for i in items] == [("series", "series")]
    items = build_inference_datalist(tmp_path, ["thin"], ["thin"])
    assert [Path(i["image"]).name for i in items] == ["series"]


@needs_ct
@pytest.mark.parametrize("problem", ["mixed series", "missing slice", "not DICOM"])
def test_broken_series_folders_are_refused_naming_the_folder(tmp_path: Path, problem: str) -> None:
    series = small_series(tmp_path)
    files = sorted(series.iterdir())
    if problem == "mixed series":
        ds = pydicom.dcmread(files[3])
        ds.SeriesInstanceUID = "1.2.3.4.5"
        ds.save_as(files[3])
        expected = "slices of 2 DICOM series"
    elif problem == "missing slice":
        files[5].unlink()
        expected = "not evenly spaced"
    else:
        (series / "notes.txt").write_text("scan protocol")
        expected = "notes.txt is not a DICOM file"
    before = sorted((p.name, p.stat().st_size) for p in series.iterdir())
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps it; the bundle's hook finds it in the chain
        ct_loader()({"image": str(series)})
    error = find_input_error(info.value)
    assert isinstance(error, BundleInputError) and expected in str(error) and str(series) in str(error)
    assert sorted((p.name, p.stat().st_size) for p in series.iterdir()) == before
