"""The real ZEISS CZI file through the 'czi' extra (bioio + bioio-czi): read with its physical sizes, through MONAI's
LoadImage, and in the AllenCell data preparation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from monai.data.utils import affine_to_spacing
from monai.transforms import LoadImage

from sparsessp_monai.data.allencell import prepare_allencell
from sparsessp_monai.io import CziReader, TiffReader, read_czi, read_ome_tiff

pytest.importorskip("bioio_czi", reason="CZI needs the 'czi' extra: pip install 'sparsessp_monai[czi]'")

CZI = REPO.parent / "shared" / "data" / "microscopy" / "zeiss_celldivision_T3_Z5_CH2.czi"
pytestmark = pytest.mark.skipif(not CZI.is_file(), reason=f"real CZI not found at {CZI} (../shared/data)")
SPACING = (0.32, 0.0906, 0.0906)  # from the file's metadata (the data README)


def test_read_czi_gives_czyx_with_the_files_voxel_size_and_channels() -> None:
    data, meta = read_czi(CZI)
    assert data.shape == (2, 5, 170, 240) and data.dtype == np.uint16
    assert meta["spacing_zyx"] == pytest.approx(SPACING, abs=1e-4)
    assert meta["channel_names"] == ["LED555", "LED470"]
    later, _ = read_czi(CZI, timepoint=2)
    assert not np.array_equal(later, data)  # another time point of the dividing cell
    with pytest.raises(ValueError, match="time point 3 requested, the file has 3"):
        read_czi(CZI, timepoint=3)


def test_load_image_reads_czi_beside_tiff_readers(tmp_path: Path) -> None:
    img = LoadImage(reader=[TiffReader, CziReader], image_only=True)(str(CZI))
    assert tuple(img.shape) == (2, 5, 170, 240)
    np.testing.assert_allclose(affine_to_spacing(img.affine, r=3).numpy(), SPACING, atol=1e-4)
    assert img.meta["spacing_known_zyx"].tolist() == [True, True, True]
    bad = tmp_path / "broken.czi"
    bad.write_bytes(CZI.read_bytes()[:4096])
    with pytest.raises(ValueError, match=r"broken\.czi: cannot be read as CZI"):
        read_czi(bad)


def test_allencell_preparation_reads_the_czi(tmp_path: Path) -> None:
    csv = tmp_path / "csvs" / "chromosomes.csv"
    csv.parent.mkdir()
    csv.write_text(f"path_czi,channel_signal,channel_target\n{CZI},1,0\n")
    datalist = prepare_allencell([csv], tmp_path / "prepared")
    item = json.loads(datalist.read_text())["training"][0]
    signal, meta = read_ome_tiff(tmp_path / "prepared" / item["image"])
    # Z kept, XY resampled from the file's 0.0906 um to 0.29 um
    assert signal.shape == (1, 5, round(170 * 0.0906 / 0.29), round(240 * 0.0906 / 0.29))
    assert meta["spacing_zyx"] == pytest.approx((0.32, 0.29, 0.29), abs=1e-3)
