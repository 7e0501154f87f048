"""
AllenCell / RepMode data preparation: CSV -> z-scored, XY-resampled OME-TIFF volumes + Decathlon datalist with
RepMode's splits, the RepMode .pth import (pickle opt-in), the command line script, and bad inputs. The test writes
its own small OME-TIFF and ImageJ-TIFF files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.data import load_decathlon_datalist

from sparsessp_monai.data.allencell import (
    ImageRecord,
    import_repmode_pth,
    prepare_allencell,
    read_allencell_csv,
    read_channels,
    repmode_dna_split,
    repmode_split,
    resample_xy,
    zscore,
)
from sparsessp_monai.io import read_ome_tiff, write_ome_tiff

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "prepare_allencell.py"
SHAPE = (5, 40, 34)  # Z, Y, X of the raw test images at 0.108 um/px
CHANNELS = ("dna", "brightfield", "structure")


def smooth_volume(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    """A smooth positive random volume (like microscopy, unlike white noise it survives anti-aliasing)."""
    coarse = rng.random((shape[0], shape[1] // 8 + 2, shape[2] // 8 + 2))
    fine = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, : shape[1], : shape[2]]
    return (1000 + 500 * fine + 20 * rng.random(shape)).astype(np.float32)


def make_raw_dataset(root: Path, counts: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """RepMode-like layout: root/csvs/<structure>.csv with path_czi 'data/<structure>/<name>' relative to root,
    images under root/<structure>/ (tom20 as OME-TIFF, the others as ImageJ hyperstacks); dna.csv lists the DNA
    channel of every image. Returns the raw (C, Z, Y, X) arrays by path_czi."""
    rng = np.random.default_rng(seed)
    csvs = root / "csvs"
    csvs.mkdir(parents=True)
    raw: dict[str, np.ndarray] = {}
    dna_rows = ["path_czi,channel_signal,channel_target,structureProteinName"]
    for structure, n in counts.items():
        rows = ["path_czi,channel_signal,channel_target,structureProteinName"]
        for i in range(n):
            data = np.stack([smooth_volume(rng) for _ in CHANNELS])
            if structure == "tom20":
                path_czi = f"data/{structure}/{structure}_{i}.ome.tif"
                write_ome_tiff(root / path_czi[5:], data, (0.29, 0.108, 0.108), channel_names=list(CHANNELS))
            else:
                path_czi = f"data/{structure}/{structure}_{i}.tif"
                (root / structure).mkdir(exist_ok=True)
                tifffile.imwrite(
                    root / path_czi[5:],
                    np.ascontiguousarray(data.transpose(1, 0, 2, 3)),
                    imagej=True,
                    metadata={"axes": "ZCYX", "spacing": 0.29, "unit": "um"},
                    resolution=(1 / 0.108, 1 / 0.108),
                )
            raw[path_czi] = data
            rows.append(f"{path_czi},1,2,{structure}")
            dna_rows.append(f"{path_czi},1,0,{structure}")
        (csvs / f"{structure}.csv").write_text("\n".join(rows) + "\n")
    (csvs / "dna.csv").write_text("\n".join(dna_rows) + "\n")
    return raw


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("allencell_raw")
    return root, make_raw_dataset(root, {"tom20": 8, "zo1": 12})


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = raw
    out = tmp_path_factory.mktemp("prepared") / "allencell"
    datalist = prepare_allencell(root / "csvs", out, data_root=root)
    assert datalist == out / "datalist.json"
    return out


# ---------------------------------------------------------------------------------------------------------------------
# splits


def test_repmode_split_is_seeded_disjoint_and_uses_two_fresh_generators() -> None:
    items = [f"img{i}" for i in range(20)]
    split = repmode_split(items, seed=42)
    assert split == repmode_split(items, seed=42)
    assert [len(split[k]) for k in ("training", "validation", "test")] == [14, 1, 5]  # round(15), round(13.5)=14
    assert sorted(i for part in split.values() for i in part) == sorted(items)
    # RepMode: DataFrame.sample(frac=1, random_state=RandomState(42)) == RandomState(42).permutation, twice
    order = np.random.RandomState(42).permutation(20)
    assert split["test"] == [items[i] for i in order[15:]]
    train_val = [items[i] for i in order[:15]]
    assert split["validation"] == [train_val[i] for i in np.random.RandomState(42).permutation(15)[14:]]
    assert repmode_split(items, seed=1) != split


def record(structure: str, name: str) -> ImageRecord:
    return ImageRecord(structure, f"data/{structure}/{name}", Path(name), 1, 2)


def test_dna_set_is_drawn_split_by_split_from_the_other_structures() -> None:
    others = {s: repmode_split([record(s, f"{s}{i}.czi") for i in range(40)]) for s in ("zo1", "tom20")}
    dna = [ImageRecord("dna", r.path_czi, r.path, 1, 0) for s in others.values() for v in s.values() for r in v]
    split = repmode_dna_split(dna, others, counts={"training": 10, "validation": 3, "test": None}, seed=42)
    assert [len(split[k]) for k in ("training", "validation", "test")] == [10, 3, 20]
    for key, chosen in split.items():
        sources = {r.path_czi for s in others.values() for r in s[key]}
        assert {r.path_czi for r in chosen} <= sources, f"DNA {key} images must come from {key} images"
        assert all(r.structure == "dna" and r.channel_target == 0 for r in chosen)
    assert split == repmode_dna_split(dna, others, counts={"training": 10, "validation": 3, "test": None}, seed=42)
    assert split != repmode_dna_split(dna, others, counts={"training": 10, "validation": 3, "test": None}, seed=7)


# ---------------------------------------------------------------------------------------------------------------------
# per-image processing


def test_zscore_and_xy_resampling() -> None:
    vol = smooth_volume(np.random.default_rng(3), (4, 93, 62))
    z = zscore(vol)
    assert z.dtype == np.float32 and abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, rel=1e-4)
    out = resample_xy(z, 0.108, 0.29)
    # Z unchanged, Y/X scaled by 0.108/0.29 and rounded like scipy.ndimage.zoom
    assert out.shape == (4, round(93 * 0.108 / 0.29), round(62 * 0.108 / 0.29)) == (4, 35, 23)
    # anti-aliased: close to a block average of the original at the same positions
    ys = ((np.arange(35) + 0.5) * 93 / 35).astype(int)
    xs = ((np.arange(23) + 0.5) * 62 / 23).astype(int)
    assert np.corrcoef(out.ravel(), z[:, ys][:, :, xs].ravel())[0, 1] > 0.9
    assert resample_xy(z, 0.29, 0.29) is not None and resample_xy(z, 0.29, 0.29).shape == z.shape
    with pytest.raises(ValueError, match="constant"):
        zscore(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        zscore(np.array([[[np.nan, 1.0]]]))


# ---------------------------------------------------------------------------------------------------------------------
# CSV -> prepared dataset


def test_prepare_writes_zscored_resampled_ome_tiffs_and_a_loadable_datalist(raw, prepared: Path) -> None:
    _, volumes = raw
    content = json.loads((prepared / "datalist.json").read_text())
    assert content["structures"] == ["dna", "tom20", "zo1"]
    assert content["spacing_zyx_um"] == pytest.approx([0.29, 0.29, 0.29])
    sizes = {k: len(content[k]) for k in ("training", "validation", "test")}
    # tom20 8 -> 6/5+1/2, zo1 12 -> 9/8+1/3; DNA from those images: all 13 train, 2 val, 5 test (fewer than 54/6/20)
    assert sizes == {"training": 5 + 8 + 13, "validation": 1 + 1 + 2, "test": 2 + 3 + 5}
    images = {k: [i["image"] for i in content[k]] for k in sizes}
    assert not set(images["training"]) & set(images["test"]) and not set(images["training"]) & set(images["validation"])
    for key in sizes:
        items = load_decathlon_datalist(prepared / "datalist.json", True, key, base_dir=prepared)
        assert len(items) == sizes[key]
        assert all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in items)
        assert {i["structure"] for i in items} == {"dna", "tom20", "zo1"}

    manifest = (prepared / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + sum(sizes.values())
    rows = [line.split(",") for line in manifest[1:]]
    # a DNA image's source is in the same split as the image of its own structure
    for split, structure, _, _, source in rows:
        if structure == "dna":
            assert any(r[0] == split and r[1] != "dna" and r[4] == source for r in rows)

    split, structure, image, label, source = rows[0]
    signal, meta = read_ome_tiff(prepared / image)
    target, tmeta = read_ome_tiff(prepared / label)
    assert meta["spacing_zyx"] == pytest.approx((0.29, 0.29, 0.29)) and tmeta["channel_names"] == [structure]
    assert signal.shape == (1, SHAPE[0], round(SHAPE[1] * 0.108 / 0.29), round(SHAPE[2] * 0.108 / 0.29))
    src = volumes[source]
    np.testing.assert_allclose(signal[0], resample_xy(zscore(src[1]), 0.108), atol=1e-6)  # channel_signal 1
    np.testing.assert_allclose(target[0], resample_xy(zscore(src[2]), 0.108), atol=1e-6)  # channel_target 2
    assert not np.allclose(target[0], resample_xy(zscore(src[0]), 0.108), atol=1e-2)
    assert abs(float(signal.mean())) < 0.05 and 0.8 < float(signal.std()) < 1.05


def test_prepare_script_prints_the_training_command_and_refuses_bad_outputs(raw, tmp_path: Path) -> None:
    root, _ = raw
    csvs = [str(root / "csvs" / "tom20.csv"), str(root / "csvs" / "dna.csv")]
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)

    proc = run(*csvs, "--out", str(out), "--data-root", str(root), "--dna-counts", "2,1,all")
    assert proc.returncode == 0, proc.stderr
    assert f"--datalist_file {out / 'datalist.json'} --dataset_dir {out}" in proc.stdout
    assert '--structures \'["dna","tom20"]\'' in proc.stdout
    content = json.loads((out / "datalist.json").read_text())
    assert [sum(i["structure"] == "dna" for i in content[k]) for k in ("training", "validation", "test")] == [2, 1, 2]

    before = sorted(p.name for p in out.rglob("*"))
    proc = run(*csvs, "--out", str(out), "--data-root", str(root))
    assert proc.returncode == 1 and "not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert sorted(p.name for p in out.rglob("*")) == before
    # replaced only on request (library call: same code path as --overwrite, without another interpreter start)
    prepare_allencell([csvs[0]], out, data_root=root, overwrite=True)
    assert json.loads((out / "datalist.json").read_text())["structures"] == ["tom20"]
    assert not list((out / "images").glob("dna"))

    proc = run(*csvs, "--out", str(root / "csvs" / "prepared"), "--data-root", str(root))
    assert proc.returncode == 1 and "overlaps the input" in proc.stderr
    assert not (root / "csvs" / "prepared").exists()
    assert not list(tmp_path.glob(".*staging*")) and not list(root.glob(".*staging*"))


def expect_no_output(out: Path) -> None:
    assert not out.exists(), "a failed preparation must not leave its output folder"
    assert not list(out.parent.glob(f".{out.name}.staging-*")), "nor its staging folder"


def test_bad_inputs_fail_clearly_without_output(raw, tmp_path: Path) -> None:
    root, _ = raw
    out = tmp_path / "out"
    bad = tmp_path / "bad.csv"
    bad.write_text("path_czi,channel_signal\nx.tif,1\n")
    with pytest.raises(ValueError, match="missing column"):
        prepare_allencell([bad], out)
    bad.write_text("path_czi,channel_signal,channel_target\nx.tif,one,2\n")
    with pytest.raises(ValueError, match="channel index"):
        read_allencell_csv(bad)
    bad.write_text("path_czi,channel_signal,channel_target\nmissing.tif,1,2\n")
    with pytest.raises(ValueError, match="do not exist"):
        prepare_allencell([bad], out)
    expect_no_output(out)

    # a channel the file does not have fails mid-run: nothing is published, staging removed
    (tmp_path / "csvs").mkdir()
    csv = tmp_path / "csvs" / "zo1.csv"
    lines = (root / "csvs" / "zo1.csv").read_text().splitlines()
    lines[-1] = lines[-1].replace(",1,2,", ",1,7,")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"channel\(s\) \[7\]"):
        prepare_allencell([csv], out, data_root=root)
    expect_no_output(out)

    czi = tmp_path / "image.czi"
    czi.write_bytes(b"ZISRAWFILE")
    try:
        import bioio  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"install sparsessp_monai\[czi\]"):
            read_channels(czi, [0])
    else:
        with pytest.raises(ValueError, match=r"image\.czi"):
            read_channels(czi, [0])
    with pytest.raises(ValueError, match="unsupported format"):
        read_channels(bad, [0])


# ---------------------------------------------------------------------------------------------------------------------
# RepMode .pth import


def write_repmode_pth(folder: Path) -> dict[str, list[dict]]:
    """Files in the layout RepMode's SSPDataset saves (df is a DataFrame there; a list here when pandas is absent)."""
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    written = {}
    for split, name, n in (("training", "train.pth", 3), ("validation", "val.pth", 1), ("test", "test.pth", 2)):
        data = []
        for i in range(n):
            structure = ("tom20", "dna")[i % 2]
            info = {"dataset": structure, "path_czi": f"data/{structure}/{split}_{i}.czi", "channel_signal": 6}
            imgs = [torch.randn(1, 4, 12, 10, generator=gen), torch.randn(1, 4, 12, 10, generator=gen)]
            data.append({"info": info, "imgs": imgs})
        try:
            import pandas as pd

            df = pd.DataFrame([d["info"] for d in data])
        except ImportError:
            df = [d["info"] for d in data]
        torch.save({"adopted_datasets_loaded": ["dna", "tom20"], "df": df, "data": data}, folder / name)
        written[split] = data
    return written


def test_repmode_pth_import_needs_the_pickle_opt_in(tmp_path: Path) -> None:
    written = write_repmode_pth(tmp_path / "pth")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"pickle.*allow_pickle=True.*--allow-pickle"):
        import_repmode_pth(tmp_path / "pth", out)
    expect_no_output(out)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--from-repmode-pth", str(tmp_path / "pth"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "--allow-pickle" in proc.stderr
    expect_no_output(out)

    datalist = import_repmode_pth(tmp_path / "pth", out, allow_pickle=True)
    content = json.loads(datalist.read_text())
    assert content["structures"] == ["dna", "tom20"]
    for split, data in written.items():
        items = load_decathlon_datalist(datalist, True, split, base_dir=out)
        assert [i["structure"] for i in items] == [d["info"]["dataset"] for d in data]
        for item, sample in zip(items, data):
            signal, meta = read_ome_tiff(item["image"])
            target, _ = read_ome_tiff(item["label"])
            np.testing.assert_array_equal(signal, sample["imgs"][0].numpy())
            np.testing.assert_array_equal(target, sample["imgs"][1].numpy())
            assert meta["spacing_zyx"] == pytest.approx((0.29, 0.29, 0.29))

    (tmp_path / "junk").mkdir()
    torch.save({"something": 1}, tmp_path / "junk" / "train.pth")
    with pytest.raises(ValueError, match="not a RepMode dataset"):
        import_repmode_pth(tmp_path / "junk", tmp_path / "out2", allow_pickle=True)
    expect_no_output(tmp_path / "out2")
