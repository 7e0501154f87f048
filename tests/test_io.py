"""Image IO: OME-TIFF round trips, MONAI reader/writer integration, error handling and PNG previews."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import LoadImage, LoadImaged, SaveImage, SaveImaged, SpatialResample
from PIL import Image

from sparsessp_monai.io import (
    OmeTiffWriter,
    TiffReader,
    ome_tiff_name_formatter,
    orthogonal_mips,
    read_ome_tiff,
    save_projection_preview,
    write_ome_tiff,
    write_png,
)

STARDIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "microscopy" / "stardist_img3d.tif"


def ramp(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """Every voxel distinct, so any axis mix-up changes the data."""
    return np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)


def parse_png(blob: bytes) -> tuple[dict, bytes]:
    """Minimal PNG parser for the tests: IHDR fields and the concatenated, CRC-checked, inflated IDAT payload
    (the filtered scanlines, one filter-type byte each); checks the file structure independently of Pillow."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, payload = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        chunks.append((kind, payload))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    idat = b"".join(p for k, p in chunks if k == b"IDAT")
    return {"width": width, "height": height, "depth": depth, "color": color}, zlib.decompress(idat)


# ----------------------------------------------------------------------------------------------------------------------
# read_ome_tiff / write_ome_tiff
# ----------------------------------------------------------------------------------------------------------------------


def test_round_trip_zyx(tmp_path):
    data = ramp((5, 6, 7), np.uint16)
    path = write_ome_tiff(tmp_path / "vol.ome.tif", data, (0.29, 0.108, 0.108))
    assert path == tmp_path / "vol.ome.tif"
    out, meta = read_ome_tiff(path)
    assert out.shape == (1, 5, 6, 7) and out.dtype == np.uint16
    np.testing.assert_array_equal(out[0], data)
    np.testing.assert_allclose(meta["spacing_zyx"], (0.29, 0.108, 0.108))
    assert meta["channel_names"] is None


def test_round_trip_czyx_with_names(tmp_path):
    data = ramp((2, 4, 5, 6))
    path = write_ome_tiff(str(tmp_path / "sub" / "vol.ome.tiff"), data, [1.0, 0.5, 0.25], channel_names=["bf", "dna"])
    out, meta = read_ome_tiff(path)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)
    assert meta["spacing_zyx"] == (1.0, 0.5, 0.25)
    assert meta["channel_names"] == ["bf", "dna"]


def test_write_validates_inputs(tmp_path):
    with pytest.raises(ValueError, match="Z, Y, X"):
        write_ome_tiff(tmp_path / "a.ome.tif", np.zeros((4, 5)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        write_ome_tiff(tmp_path / "a.ome.tif", np.zeros((2, 4, 5)), (1, 0, 1))
    with pytest.raises(ValueError, match="channel names"):
        write_ome_tiff(tmp_path / "a.ome.tif", np.zeros((2, 2, 4, 5)), (1, 1, 1), channel_names=["only-one"])
    assert list(tmp_path.iterdir()) == []


def test_units_are_converted_to_micrometres(tmp_path):
    path = tmp_path / "nm.ome.tif"
    metadata = {
        "axes": "ZYX",
        "PhysicalSizeZ": 300.0,
        "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 108.0,
        "PhysicalSizeYUnit": "nm",
        "PhysicalSizeX": 0.0001,
        "PhysicalSizeXUnit": "mm",
    }
    tifffile.imwrite(path, ramp((3, 4, 5)), ome=True, metadata=metadata, photometric="minisblack")
    _, meta = read_ome_tiff(path)
    np.testing.assert_allclose(meta["spacing_zyx"], (0.3, 0.108, 0.1))


def test_plain_tiff_without_metadata(tmp_path):
    data = ramp((6, 4, 5), np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", data)
    out, meta = read_ome_tiff(tmp_path / "plain.tif")
    np.testing.assert_array_equal(out, data[None])
    assert meta["spacing_zyx"] == (None, None, None)
    assert meta["channel_names"] is None


def test_plain_tiff_resolution_tags(tmp_path):
    # 40000 pixels per centimetre = 0.25 um pixels; TIFF has no Z spacing
    tifffile.imwrite(tmp_path / "res.tif", ramp((6, 4, 5)), resolution=(40000, 40000), resolutionunit="CENTIMETER")
    _, meta = read_ome_tiff(tmp_path / "res.tif")
    assert meta["spacing_zyx"][0] is None
    np.testing.assert_allclose(meta["spacing_zyx"][1:], (0.25, 0.25))


def test_imagej_hyperstack_zcyx(tmp_path):
    data = ramp((3, 2, 4, 5), np.uint16)  # ImageJ order: Z, C, Y, X
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "ZCYX", "spacing": 0.5, "unit": "um"},
    )
    out, meta = read_ome_tiff(tmp_path / "ij.tif")
    np.testing.assert_array_equal(out, data.transpose(1, 0, 2, 3))
    np.testing.assert_allclose(meta["spacing_zyx"], (0.5, 0.2, 0.2))


def test_ome_tczyx_single_time_point(tmp_path):
    data = ramp((1, 2, 3, 4, 5))
    tifffile.imwrite(tmp_path / "t.ome.tif", data, ome=True, metadata={"axes": "TCZYX"}, photometric="minisblack")
    out, _ = read_ome_tiff(tmp_path / "t.ome.tif")
    np.testing.assert_array_equal(out, data[0])


def test_several_time_points_are_rejected(tmp_path):
    path = tmp_path / "tt.ome.tif"
    tifffile.imwrite(path, ramp((2, 3, 4, 5)), ome=True, metadata={"axes": "TZYX"}, photometric="minisblack")
    with pytest.raises(ValueError, match=r"tt\.ome\.tif.*time"):
        read_ome_tiff(path)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "corrupt.tif"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ValueError, match=r"corrupt\.tif"):
        read_ome_tiff(path)
    with pytest.raises(ValueError, match=r"corrupt\.tif"):
        TiffReader().read(str(path))


def test_truncated_file_names_the_file(tmp_path):
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, ramp((8, 64, 64)))
    path = tmp_path / "truncated.tif"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.tif"):
        read_ome_tiff(path)


def test_2d_tiff_is_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", ramp((4, 5)))
    with pytest.raises(ValueError, match=r"flat\.tif.*3D"):
        read_ome_tiff(tmp_path / "flat.tif")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.tif"):
        read_ome_tiff(tmp_path / "nothing.tif")


def test_failed_write_leaves_no_files(tmp_path, monkeypatch):
    target = tmp_path / "vol.ome.tif"
    write_ome_tiff(target, ramp((2, 3, 4)), (1, 1, 1))
    before = target.read_bytes()

    def explode(*args, **kwargs):
        # behave like a crash half-way: something was written, then the writer fails
        Path(args[0]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", explode)
    with pytest.raises(OSError, match="disk full"):
        write_ome_tiff(target, ramp((2, 3, 4)) + 1, (1, 1, 1))
    with pytest.raises(OSError, match="disk full"):
        write_ome_tiff(tmp_path / "new.ome.tif", ramp((2, 3, 4)), (1, 1, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.ome.tif"]
    assert target.read_bytes() == before  # the previous file is untouched


# ----------------------------------------------------------------------------------------------------------------------
# MONAI reader / writer
# ----------------------------------------------------------------------------------------------------------------------


def test_reader_suffixes():
    reader = TiffReader()
    assert reader.verify_suffix("a.tif") and reader.verify_suffix("A.OME.TIFF") and reader.verify_suffix(["a.tiff"])
    assert not reader.verify_suffix("a.nii.gz") and not reader.verify_suffix(["a.tif", "b.png"])


def test_load_imaged_with_tiff_reader(tmp_path):
    data = ramp((2, 4, 5, 6))
    path = write_ome_tiff(tmp_path / "cell.ome.tif", data, (2.0, 0.5, 0.25), channel_names=["bf", "dna"])
    out = LoadImaged(keys=["image"], reader=TiffReader)({"image": str(path)})["image"]
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (2, 4, 5, 6)
    np.testing.assert_array_equal(out.numpy(), data)
    np.testing.assert_allclose(out.affine.numpy(), np.diag([2.0, 0.5, 0.25, 1.0]))
    np.testing.assert_allclose(affine_to_spacing(out.meta["original_affine"]), (2.0, 0.5, 0.25))
    assert tuple(out.meta["spatial_shape"]) == (4, 5, 6)
    assert out.meta["spacing_known"] is True and out.meta["channel_names"] == ["bf", "dna"]
    # ensure_channel_first must not move anything: the data is already channel-first
    same = LoadImaged(keys="image", reader=TiffReader, ensure_channel_first=True)({"image": path})["image"]
    assert tuple(same.shape) == (2, 4, 5, 6)


def test_load_image_unknown_spacing_and_channel_stacking(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", ramp((6, 4, 5), np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", ramp((6, 4, 5), np.uint16) + 1)
    out = LoadImage(reader=TiffReader(), image_only=True, dtype=None)(str(tmp_path / "a.tif"))
    assert tuple(out.shape) == (1, 6, 4, 5)
    assert out.meta["spacing_known"] is False
    np.testing.assert_allclose(out.affine.numpy(), np.eye(4))
    both = LoadImage(reader=TiffReader(), image_only=True)([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")])
    assert tuple(both.shape) == (2, 6, 4, 5)
    np.testing.assert_array_equal(both[1].numpy() - both[0].numpy(), 1)


def test_bundle_config_forms(tmp_path):
    path = write_ome_tiff(tmp_path / "x.ome.tif", ramp((3, 4, 5)), (1.0, 0.5, 0.5))
    configs = [
        {"load": {"_target_": "LoadImaged", "keys": ["image"], "reader": "sparsessp_monai.io.TiffReader"}},
        {
            "load": {
                "_target_": "LoadImaged",
                "keys": ["image"],
                "reader": {"_target_": "sparsessp_monai.io.TiffReader"},
            }
        },
        {
            "imports": ["$import sparsessp_monai.io as sio"],
            "load": {"_target_": "LoadImaged", "keys": ["image"], "reader": "$sio.TiffReader"},
        },
    ]
    for config in configs:
        load = ConfigParser(config).get_parsed_content("load")
        assert tuple(load({"image": str(path)})["image"].shape) == (1, 3, 4, 5)


def test_save_imaged_round_trip(tmp_path):
    data = ramp((2, 4, 5, 6))
    src = write_ome_tiff(tmp_path / "in" / "cell.v2.ome.tif", data, (2.0, 0.5, 0.25), channel_names=["a", "b"])
    item = LoadImaged(keys="image", reader=TiffReader)({"image": str(src)})
    save = SaveImaged(
        keys="image",
        output_dir=str(tmp_path / "out"),
        output_postfix="pred",
        output_ext=".ome.tif",
        writer=OmeTiffWriter,
        output_dtype=np.float32,
        separate_folder=True,
        output_name_formatter=ome_tiff_name_formatter,
        print_log=False,
    )
    save(item)
    written = tmp_path / "out" / "cell.v2" / "cell.v2_pred.ome.tif"
    assert written.is_file()
    again = LoadImaged(keys="image", reader=TiffReader)({"image": str(written)})["image"]
    np.testing.assert_array_equal(again.numpy(), data)
    np.testing.assert_allclose(affine_to_spacing(again.affine), (2.0, 0.5, 0.25))
    assert again.meta["channel_names"] == ["a", "b"]

    # without the formatter MONAI strips only ".tif": the folder and stem keep ".ome"
    SaveImage(output_dir=str(tmp_path / "plain"), output_ext=".ome.tif", writer="sparsessp_monai.io.OmeTiffWriter")(
        item["image"]
    )
    assert (tmp_path / "plain" / "cell.v2.ome" / "cell.v2.ome_trans.ome.tif").is_file()


def test_writer_spacing_from_affine_and_explicit_names(tmp_path):
    img = MetaTensor(torch.rand(1, 3, 4, 5), affine=torch.diag(torch.tensor([0.3, 0.1, 0.1, 1.0], dtype=torch.float64)))
    img.meta["channel_names"] = ["brightfield"]  # e.g. copied from the input: overridden below
    saver = SaveImage(output_dir=str(tmp_path), output_ext=".ome.tif", writer=OmeTiffWriter, separate_folder=False)
    saver.set_options(init_kwargs={"channel_names": ["nucleus"]})
    saver(img, filename=str(tmp_path / "pred"))
    out, meta = read_ome_tiff(tmp_path / "pred.ome.tif")
    np.testing.assert_allclose(out, img.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(meta["spacing_zyx"], (0.3, 0.1, 0.1))
    assert meta["channel_names"] == ["nucleus"]


def test_writer_keeps_unknown_spacing_unknown(tmp_path):
    tifffile.imwrite(tmp_path / "raw.tif", ramp((6, 4, 5), np.uint16))
    img = LoadImage(reader=TiffReader, image_only=True)(str(tmp_path / "raw.tif"))
    SaveImage(output_dir=str(tmp_path / "o"), output_ext=".ome.tif", writer=OmeTiffWriter, print_log=False)(img)
    _, meta = read_ome_tiff(tmp_path / "o" / "raw" / "raw_trans.ome.tif")
    assert meta["spacing_zyx"] == (None, None, None)


def save_resampled(img: MetaTensor, stem: Path, **kwargs) -> None:
    """Save ``img`` as ``<stem>.ome.tif`` with ``SaveImage(resample=True)`` and the OME-TIFF writer."""
    saver = SaveImage(
        output_dir=str(stem.parent), output_ext=".ome.tif", writer=OmeTiffWriter, separate_folder=False,
        resample=True, print_log=False, **kwargs,
    )  # fmt: skip
    saver(img, filename=str(stem))


def test_writer_resample_matches_spatial_resample(tmp_path):
    # undo a resampling before saving: back to original_affine / spatial_shape, every channel on its own
    data = np.random.default_rng(0).random((2, 6, 7, 8)).astype(np.float32)
    affine = torch.diag(torch.tensor([0.5, 0.2, 0.2, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.from_numpy(data), affine=affine)
    img.meta["original_affine"] = np.diag([1.0, 0.2, 0.3, 1.0])
    img.meta["spatial_shape"] = np.array([3, 7, 5])
    save_resampled(img, tmp_path / "r", mode="bilinear")
    out, meta = read_ome_tiff(tmp_path / "r.ome.tif")
    expected = SpatialResample(mode="bilinear", padding_mode="border", dtype=np.float64)(
        MetaTensor(torch.from_numpy(data), affine=affine),
        dst_affine=torch.as_tensor(img.meta["original_affine"]),
        spatial_size=[3, 7, 5],
    )
    assert out.shape == (2, 3, 7, 5)
    np.testing.assert_allclose(out, expected.numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(out[0], out[1])  # the channels were not mixed into one another
    np.testing.assert_allclose(meta["spacing_zyx"], (1.0, 0.2, 0.3))

    # already on the original grid: nothing is resampled and the dtype is kept
    same = MetaTensor(torch.arange(60, dtype=torch.int16).reshape(1, 3, 4, 5), affine=affine)
    same.meta["original_affine"] = affine.numpy()
    same.meta["spatial_shape"] = np.array([3, 4, 5])
    save_resampled(same, tmp_path / "s", output_dtype=None)
    kept, _ = read_ome_tiff(tmp_path / "s.ome.tif")
    assert kept.dtype == np.int16
    np.testing.assert_array_equal(kept, same.numpy())


def test_split_modules_export_the_package_names():
    from sparsessp_monai import io
    from sparsessp_monai.io import reader, tiff, writer

    assert io.read_ome_tiff is tiff.read_ome_tiff and io.write_ome_tiff is tiff.write_ome_tiff
    assert io.TiffReader is reader.TiffReader and io.known_spacing_axes is reader.known_spacing_axes
    assert io.OmeTiffWriter is writer.OmeTiffWriter and io.ome_tiff_name_formatter is writer.ome_tiff_name_formatter
    assert set(tiff.__all__) | set(reader.__all__) | set(writer.__all__) <= set(io.__all__)


@pytest.mark.skipif(not STARDIST.is_file(), reason=f"sample volume not available at {STARDIST}")
def test_stardist_sample_volume():
    img = LoadImaged(keys="image", reader=TiffReader, dtype=None)({"image": str(STARDIST)})["image"]
    assert tuple(img.shape) == (1, 31, 61, 57)
    raw, _ = read_ome_tiff(STARDIST)
    assert raw.dtype == np.uint16 and raw.shape == (1, 31, 61, 57)
    np.testing.assert_array_equal(img.numpy(), raw)


# ----------------------------------------------------------------------------------------------------------------------
# PNG previews
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, color", [((3, 4), 0), ((3, 4, 3), 2), ((3, 4, 4), 6)])
def test_write_png_decodes(tmp_path, shape, color):
    img = (np.arange(int(np.prod(shape))) * 7 % 256).astype(np.uint8).reshape(shape)
    path = write_png(tmp_path / "x.png", img)
    header, raw = parse_png(path.read_bytes())
    assert header == {"width": 4, "height": 3, "depth": 8, "color": color}
    samples = 1 if img.ndim == 2 else img.shape[2]
    assert len(raw) == 3 * (1 + 4 * samples)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(3, 1 + 4 * samples)
    assert (rows[:, 0] <= 4).all()  # a valid PNG filter type (0-4: the encoder picks one per scanline)
    with Image.open(path) as decoded:
        assert decoded.format == "PNG"
        np.testing.assert_array_equal(np.asarray(decoded).reshape(3, -1), img.reshape(3, -1))


def test_write_png_gray_alpha_and_single_channel(tmp_path):
    img = (np.arange(24) * 11 % 256).astype(np.uint8).reshape(3, 4, 2)
    header, _ = parse_png(write_png(tmp_path / "la.png", img).read_bytes())
    assert header["color"] == 4  # gray + alpha
    with Image.open(tmp_path / "la.png") as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), img)
    header, _ = parse_png(write_png(tmp_path / "g.png", img[:, :, :1]).read_bytes())
    assert header["color"] == 0
    with Image.open(tmp_path / "g.png") as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), img[:, :, 0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "la.png"]  # no temporary files left


def test_write_png_validates(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "x.png", np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_png(tmp_path / "x.png", np.zeros((3, 4, 5), np.uint8))


def test_projection_preview_layout(tmp_path):
    vol = np.zeros((4, 6, 8), np.float32)
    vol[1, 2, 3] = 10.0
    xy, xz, yz = orthogonal_mips(vol, spacing_zyx=(0.5, 0.25, 0.25))
    assert xy.shape == (6, 8) and xz.shape == (8, 8) and yz.shape == (6, 8)  # Z stretched x2
    assert xy[2, 3] == 10 and xz[2, 3] == 10 and xz[3, 3] == 10 and yz[2, 2] == 10

    path = save_projection_preview(
        tmp_path / "prev" / "p.png", [("input", vol), ("prediction", torch.from_numpy(vol)[None]), ("target", vol)]
    )
    header, raw = parse_png(path.read_bytes())
    panel_w, panel_h = 8 + 2 + 4, 6 + 2 + 4  # X + gap + Z, Y + gap + Z
    assert header["color"] == 2
    assert (header["width"], header["height"]) == (3 * panel_w + 2 * 6, panel_h)
    assert len(raw) == header["height"] * (1 + 3 * header["width"])
    with Image.open(path) as decoded:
        pixels = np.asarray(decoded.convert("RGB"))
    assert pixels.shape == (panel_h, 3 * panel_w + 2 * 6, 3)
    assert (pixels[2, 3] == 255).all() and (pixels[0, 0] == 0).all()  # the bright voxel in the XY view
    assert sorted(p.name for p in (tmp_path / "prev").iterdir()) == ["p.png"]


def test_projection_preview_validates(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        save_projection_preview(tmp_path / "p.png", [])
    with pytest.raises(ValueError, match=r"'flat'.*3D"):
        save_projection_preview(tmp_path / "p.png", [("flat", np.zeros((4, 5)))])
    bad = np.zeros((2, 3, 4))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"'bad'.*NaN"):
        save_projection_preview(tmp_path / "p.png", [("ok", np.zeros((2, 3, 4))), ("bad", bad)])
    with pytest.raises(ValueError, match="spacing"):
        save_projection_preview(tmp_path / "p.png", [("v", np.zeros((2, 3, 4)))], spacing_zyx=(1, -1, 1))
    assert not os.listdir(tmp_path)
