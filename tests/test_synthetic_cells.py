"""Tests for the synthetic demo data generator (sparsessp_monai.data.synthetic_cells)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsessp_monai.data import STRUCTURES, generate_demo_dataset, make_sample, make_sample_all_structures
from sparsessp_monai.data import synthetic_cells as sc
from sparsessp_monai.data.cell_render import RI_CONTRAST, STRUCTURE_MAPS, render_transmitted_light
from sparsessp_monai.data.cell_scene import Scene, draw_scene
from sparsessp_monai.data.filters import gaussian_filter

STATS_SHAPE = (32, 96, 96)
TINY_SHAPE = (8, 24, 32)
REPO_ROOT = Path(__file__).resolve().parents[1]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    a = a - a.mean()
    b = b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _blur(vol: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(vol.astype(np.float32), (sigma, sigma, sigma))


@pytest.fixture(scope="module")
def scenes() -> dict[int, tuple[np.ndarray, dict[str, np.ndarray]]]:
    return {seed: make_sample_all_structures(seed, STATS_SHAPE) for seed in (0, 1, 2)}


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# make_sample
# ----------------------------------------------------------------------------------------------------------------


def test_structures_constant() -> None:
    assert {"dna", "membrane", "mitochondria", "microtubules"} <= set(STRUCTURES)
    assert len(set(STRUCTURES)) == len(STRUCTURES)
    assert all(isinstance(s, str) for s in STRUCTURES)


@pytest.mark.parametrize("shape", [(32, 128, 128), TINY_SHAPE, (8, 8, 8)])
def test_shapes_dtypes_normalisation(shape: tuple[int, int, int]) -> None:
    tl, fl = make_sample("mitochondria", 3, shape)
    for img in (tl, fl):
        assert img.shape == shape
        assert img.dtype == np.float32
        assert np.isfinite(img).all()
        assert abs(float(img.astype(np.float64).mean())) < 1e-5
        assert abs(float(img.astype(np.float64).std()) - 1.0) < 1e-4


def test_default_shape() -> None:
    tl, fl = make_sample("dna", 0)
    assert tl.shape == fl.shape == (32, 128, 128)


def test_deterministic_and_seed_dependent() -> None:
    a = make_sample("membrane", 5, TINY_SHAPE)
    b = make_sample("membrane", 5, TINY_SHAPE)
    c = make_sample("membrane", 6, TINY_SHAPE)
    assert _digest(*a) == _digest(*b)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


def test_scene_shared_across_structures() -> None:
    tl_dna, fl_dna = make_sample("dna", 11, TINY_SHAPE)
    tl_mem, fl_mem = make_sample("membrane", 11, TINY_SHAPE)
    # one scene per seed: identical transmitted light, different labels
    assert np.array_equal(tl_dna, tl_mem)
    assert not np.array_equal(fl_dna, fl_mem)
    tl_all, fl_all = make_sample_all_structures(11, TINY_SHAPE)
    assert np.array_equal(tl_all, tl_dna)
    assert np.array_equal(fl_all["dna"], fl_dna)
    assert np.array_equal(fl_all["membrane"], fl_mem)
    assert list(fl_all) == list(STRUCTURES)


def test_deterministic_across_processes() -> None:
    code = (
        "import hashlib, sys\n"
        "from sparsessp_monai.data import make_sample\n"
        "h = hashlib.sha256()\n"
        "for a in make_sample('microtubules', 42, (8, 24, 32)):\n"
        "    h.update(a.tobytes())\n"
        "sys.stdout.write(h.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == _digest(*make_sample("microtubules", 42, (8, 24, 32)))


def test_unknown_structure() -> None:
    with pytest.raises(ValueError, match="'golgi'") as info:
        make_sample("golgi", 0, TINY_SHAPE)
    for name in STRUCTURES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="'golgi'"):
        make_sample_all_structures(0, TINY_SHAPE, structures=["dna", "golgi"])


@pytest.mark.parametrize("shape", [(7, 64, 64), (32, 64, 4), (32, 64), (32, 64, 64, 2), "abc"])
def test_bad_shape(shape) -> None:
    with pytest.raises(ValueError, match="shape"):
        make_sample("dna", 0, shape)


@pytest.mark.parametrize("seed", [-1, 1.5, "x"])
def test_bad_seed(seed) -> None:
    with pytest.raises(ValueError, match="seed"):
        make_sample("dna", seed, TINY_SHAPE)


def test_fluorescence_distinct_per_structure(scenes) -> None:
    _, fl = scenes[0]
    for a, b in itertools.combinations(STRUCTURES, 2):
        assert not np.array_equal(fl[a], fl[b])
        assert abs(_pearson(fl[a], fl[b])) < 0.8, (a, b)


def test_fluorescence_has_signal(scenes) -> None:
    # a labelled structure is sparse and bright: heavy right tail rather than symmetric noise
    for _, fl in scenes.values():
        for name, img in fl.items():
            assert float(img.max()) > 3.0, name
            assert float(np.percentile(img, 99)) > 1.5, name


def test_transmitted_light_not_linear_in_fluorescence(scenes) -> None:
    for tl, fl in scenes.values():
        for name, img in fl.items():
            assert abs(_pearson(tl, img)) < 0.6, name


def test_transmitted_light_carries_dna_information(scenes) -> None:
    for seed, (tl, fl) in scenes.items():
        gz, gy, gx = np.gradient(tl)
        energy = _blur(gz * gz + gy * gy + gx * gx, 2.0)
        nuclei = fl["dna"] > 1.0
        assert _pearson(energy, nuclei) > 0.02, seed
        medium = draw_scene(seed, STATS_SHAPE).maps["cell"] < 0.01
        assert energy[nuclei].mean() > 1.3 * energy[medium].mean(), seed


def test_every_structure_leaves_a_trace(scenes) -> None:
    seed = 0
    _, fl = scenes[seed]
    scene = draw_scene(seed, STATS_SHAPE)
    full = render_transmitted_light(scene, seed, noise=False)
    photon_noise = float(np.sqrt(full.mean()))
    for name in STRUCTURES:
        ablated = render_transmitted_light(scene, seed, exclude=STRUCTURE_MAPS[name], noise=False)
        diff = full - ablated
        # visible above shot noise, and located where the structure is
        assert float(np.sqrt(np.mean(diff * diff))) > 0.1 * photon_noise, name
        assert float(np.abs(diff).max()) > 3.0 * photon_noise, name
        assert _pearson(_blur(diff * diff, 1.5), _blur(fl[name], 1.5)) > 0.3, name


def test_defocus_contrast_flips_sign() -> None:
    # a single thin phase object: the brightfield response above and below its plane has opposite signs
    shape = (33, 33, 33)
    scene = Scene(shape=shape, maps={k: np.zeros(shape, np.float32) for k in RI_CONTRAST})
    scene.maps["lipid"][16, 16, 16] = 10.0
    img = render_transmitted_light(scene, 0, noise=False)
    flat = render_transmitted_light(
        Scene(shape=shape, maps={k: np.zeros(shape, np.float32) for k in RI_CONTRAST}), 0, noise=False
    )
    contrast = (img - flat)[:, 16, 16]
    above, below = contrast[19:23].mean(), contrast[10:14].mean()
    assert above * below < 0
    assert min(abs(above), abs(below)) > 1.0


def test_gaussian_filter_matches_analytic() -> None:
    impulse = np.zeros((9, 31, 31), np.float32)
    impulse[4, 15, 15] = 1.0
    out = gaussian_filter(impulse, (0.0, 2.0, 1.0))
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    ys = np.arange(31) - 15
    profile_y = np.exp(-0.5 * (ys / 2.0) ** 2)
    profile_y /= profile_y.sum()
    # the kernel is truncated at 3.5 sigma (7 voxels here)
    inner = slice(8, 23)
    np.testing.assert_allclose(out[4, inner, 15] / out[4, 15, 15], profile_y[inner] / profile_y[15], atol=1e-5)
    assert np.all(out[4, :8, 15] == 0) and np.all(out[4, 23:, 15] == 0)
    assert np.all(out[:4] == 0) and np.all(out[5:] == 0)
    # derivative kernel: a unit ramp has unit slope away from the borders
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None], (40, 3, 3)).copy()
    slope = gaussian_filter(ramp, (3.0, 0.0, 0.0), derivative_axes=(0,))
    np.testing.assert_allclose(slope[12:-12], 1.0, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# generate_demo_dataset
# ----------------------------------------------------------------------------------------------------------------


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_layout_and_split(tmp_path: Path) -> None:
    import tifffile

    out = tmp_path / "demo"
    path = generate_demo_dataset(out, num_per_structure=4, shape=TINY_SHAPE, seed=3, val_fraction=0.25)
    assert path == out.absolute() / "datalist.json"
    content = json.loads(path.read_text())
    assert content["structures"] == list(STRUCTURES)
    assert content["spacing_zyx_um"] == [0.29, 0.29, 0.29]
    assert content["generator"]["shape"] == list(TINY_SHAPE)
    assert content["generator"]["seed"] == 3
    items = content["training"] + content["validation"]
    assert len(items) == 4 * len(STRUCTURES)
    for name in STRUCTURES:
        # stratified: every structure is represented in both splits
        assert sum(it["structure"] == name for it in content["training"]) == 3
        assert sum(it["structure"] == name for it in content["validation"]) == 1
    expected_files = set()
    for item in items:
        assert set(item) == {"image", "label", "structure", "task"}
        assert item["task"] == STRUCTURES.index(item["structure"])
        for key, suffix in (("image", "_signal.ome.tif"), ("label", "_target.ome.tif")):
            rel = item[key]
            assert not os.path.isabs(rel) and rel.startswith("images/") and rel.endswith(suffix)
            assert rel.startswith(f"images/{item['structure']}_")
            assert (out / rel).is_file()
            expected_files.add(rel)
    assert {str(p.relative_to(out)) for p in (out / "images").iterdir()} == expected_files

    item = content["validation"][0]
    k = int(item["image"].split("_")[-2])
    signal, target = make_sample(item["structure"], sc.sample_seed(3, item["task"], k), TINY_SHAPE)
    np.testing.assert_array_equal(tifffile.imread(out / item["image"]), signal)
    np.testing.assert_array_equal(tifffile.imread(out / item["label"]), target)
    # every sample has its own scene
    first = [tifffile.imread(out / it["image"]) for it in content["training"][:2]]
    assert not np.array_equal(first[0], first[1])
    # nothing left behind next to the dataset
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_dataset_idempotent_and_regenerates(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    kwargs = {"num_per_structure": 3, "shape": TINY_SHAPE, "structures": ["dna", "actin"]}
    path = generate_demo_dataset(out, **kwargs)
    before = _mtimes(out)
    assert generate_demo_dataset(out, **kwargs) == path
    assert _mtimes(out) == before

    (out / "notes.txt").write_text("keep me")
    path2 = generate_demo_dataset(out, **{**kwargs, "num_per_structure": 2, "seed": 1})
    content = json.loads(path2.read_text())
    assert content["generator"]["num_per_structure"] == 2 and content["generator"]["seed"] == 1
    assert content["structures"] == ["dna", "actin"]
    assert [it["task"] for it in content["training"] + content["validation"]].count(STRUCTURES.index("actin")) == 2
    # stale files of the old dataset are gone, unrelated files survive
    assert not (out / "images" / "dna_002_signal.ome.tif").exists()
    assert (out / "notes.txt").read_text() == "keep me"
    assert _mtimes(out)["datalist.json"] != before["datalist.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_dataset_regenerates_when_files_missing(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    path = generate_demo_dataset(out, num_per_structure=2, shape=TINY_SHAPE, structures=["nucleoli"])
    victim = out / json.loads(path.read_text())["training"][0]["label"]
    victim.unlink()
    generate_demo_dataset(out, num_per_structure=2, shape=TINY_SHAPE, structures=["nucleoli"])
    assert victim.is_file()


def test_dataset_interrupted_run_leaves_no_complete_looking_state(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "demo"
    good = generate_demo_dataset(out, num_per_structure=2, shape=TINY_SHAPE, structures=["dna"])
    good_bytes = good.read_bytes()
    calls = {"n": 0}
    real = sc.make_sample

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sc, "make_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(out, num_per_structure=2, shape=TINY_SHAPE, structures=["dna"], seed=9)
    # the previous complete dataset is untouched and no temporary directory is left behind
    assert good.read_bytes() == good_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]

    calls["n"] = 0
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(fresh, num_per_structure=2, shape=TINY_SHAPE, structures=["dna"])
    assert not fresh.exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_per_structure": 0},
        {"num_per_structure": 1.5},
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"structures": []},
        {"structures": ["dna", "dna"]},
        {"structures": ["er"]},
        {"structures": "dna"},
        {"shape": (4, 32, 32)},
        {"seed": -3},
    ],
)
def test_dataset_invalid_args(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "demo", **{"shape": TINY_SHAPE, **kwargs})
    assert not (tmp_path / "demo").exists()


def test_dataset_single_sample_and_no_validation(tmp_path: Path) -> None:
    path = generate_demo_dataset(tmp_path / "a", num_per_structure=1, shape=TINY_SHAPE, structures=["membrane"])
    content = json.loads(path.read_text())
    assert len(content["training"]) == 1 and content["validation"] == []
    path = generate_demo_dataset(
        tmp_path / "b", num_per_structure=2, shape=TINY_SHAPE, structures=["membrane"], val_fraction=0.0
    )
    assert json.loads(path.read_text())["validation"] == []


def test_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--num-per-structure", "2", "--shape", "8", "16", "16", "--seed", "4"]
    assert sc.main([*argv, "--structures", "mitochondria", "microtubules"]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed) == out.absolute() / "datalist.json"
    content = json.loads(Path(printed).read_text())
    assert content["generator"]["shape"] == [8, 16, 16]
    assert content["structures"] == ["mitochondria", "microtubules"]
    with pytest.raises(SystemExit) as info:
        sc.main(["--out", str(out), "--shape", "4", "16", "16"])
    assert info.value.code == 2
