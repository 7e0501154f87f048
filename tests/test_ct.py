"""
Sparse-slice CT/MR to thin-slice reconstruction: phantom NIfTI in a non-RAS orientation, depth-axis selection,
windows and metrics, the ct_* bundle configs end to end (the thin-slice affine of the written output), a real MR
volume, and bad inputs that must leave no output. The cubic-spline baseline (``PrefixResampleZ(mode="cubic")``)
is checked against scipy in test_transforms.py.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import train_into
from monai.bundle import run as bundle_run
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, Orientationd

from sparsessp_monai.ct import (
    InverseWindowd,
    KeepAcquiredSlicesd,
    SliceSSIMMSELoss,
    WindowIntensityd,
    acquired_mask,
    ct_datalist,
    reconstruction_scores,
    write_sparse_nifti,
)
from sparsessp_monai.data.synthetic_ct import generate_ct_dataset, make_ct_phantom, save_nifti
from sparsessp_monai.transforms import PrefixResampleZd, SubsampleZ, SubsampleZd

REPO = Path(__file__).resolve().parent.parent
# the CT configs are overlays merged on the microscopy configs, as a user passes them
CT_TRAIN = "['bundle/configs/train.json','bundle/configs/ct_train.json']"
CT_EVAL = (
    "['bundle/configs/train.json','bundle/configs/ct_train.json',"
    "'bundle/configs/evaluate.json','bundle/configs/ct_evaluate.json']"
)
CT_INFER = "['bundle/configs/inference.json','bundle/configs/ct_inference.json']"
MNI = REPO.parent / "shared" / "data" / "mri" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
LABELS = (("L", "R"), ("P", "A"), ("I", "S"))

# tiny phantoms (LR, AP, SI) = (32, 32, 40) voxels -> (S, P, L) = (40, 32, 32) after orientation
TINY = [
    "--demo#num_train", "1",
    "--demo#num_val", "1",
    "--demo#shape", "[32,32,40]",
    "--patch_size", "[32,32,32]",
    "--val_roi_size", "[32,32,32]",
    "--samples_per_volume", "2",
    "--val_interval", "1",
    "--min_epoch_length", "1",  # one step per volume: the default's 20 steps per epoch are for real training
]  # fmt: skip


def load_spl(path: Path) -> MetaTensor:
    load = Compose(
        [
            LoadImaged("image", image_only=True, ensure_channel_first=True),
            Orientationd("image", axcodes="SPL", labels=LABELS),
        ]
    )
    return load({"image": str(path)})["image"]


# --- phantom and orientation -----------------------------------------------------------------------------------


def test_phantom_is_deterministic_with_realistic_hu() -> None:
    a = make_ct_phantom(3, shape=(40, 32, 24), spacing=(4.0, 4.0, 1.0))
    assert a.shape == (40, 32, 24) and a.dtype == np.float32
    np.testing.assert_array_equal(a, make_ct_phantom(3, shape=(40, 32, 24), spacing=(4.0, 4.0, 1.0)))
    assert not np.array_equal(a, make_ct_phantom(4, shape=(40, 32, 24), spacing=(4.0, 4.0, 1.0)))
    assert np.median(a[0]) < -950  # air at the field-of-view edge
    assert (a < -700).mean() > 0.05 and (a > 500).any()  # lungs/air and bone
    body = a[12:28, 10:22]
    assert -200 < np.median(body) < 300 or (body < -700).mean() > 0.3  # soft tissue or lung inside the body


def test_phantom_nifti_in_non_ras_orientation_reads_back_superior_axis_first(tmp_path: Path) -> None:
    lps = make_ct_phantom(0, shape=(24, 20, 16), spacing=(3.0, 2.5, 1.0))
    path = save_nifti(tmp_path / "p.nii.gz", lps, (3.0, 2.5, 1.0), axcodes="LIP")
    img = nib.load(path)
    assert nib.aff2axcodes(img.affine) == ("L", "I", "P") and img.shape == (24, 16, 20)
    spl = load_spl(Path(path))
    assert spl.shape == (1, 16, 20, 24)  # (S, P, L): the axial axis is first whatever the storage order
    # voxel (k, j, i) of the SPL array is voxel (i, j, k) of the (L, P, S) phantom
    np.testing.assert_allclose(spl[0].numpy(), lps.transpose(2, 1, 0), atol=1e-4)
    assert nib.aff2axcodes(spl.affine.numpy()) == ("S", "P", "L")
    np.testing.assert_allclose(np.linalg.norm(spl.affine.numpy()[:3, :3], axis=0), [1.0, 2.5, 3.0])
    # the world position of a voxel is the same in both orientations
    world = img.affine @ np.array([5, 7, 3, 1.0])  # storage (L, I, P) index
    k, j, i = 15 - 7, 3, 5  # S index = 15 - I index, P index, L index
    np.testing.assert_allclose(spl.affine.numpy() @ np.array([k, j, i, 1.0]), world, atol=1e-4)


# --- windows, metrics ------------------------------------------------------------------------------------------


def test_window_maps_hu_to_unit_range_and_back() -> None:
    hu = MetaTensor(torch.tensor([-2000.0, -1000.0, 0.0, 500.0, 1500.0]).reshape(1, 5, 1, 1))
    d = WindowIntensityd(["image", "label"], modality="CT", window=(-1000, 1000))({"image": hu, "label": hu.clone()})
    torch.testing.assert_close(d["image"].reshape(-1), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0]))
    assert d["label"].meta["intensity_window"] == [-1000.0, 1000.0]
    back = InverseWindowd("image")(d)["image"]
    torch.testing.assert_close(back.reshape(-1), torch.tensor([-1000.0, -1000.0, 0.0, 500.0, 1000.0]))
    mr = MetaTensor(torch.arange(1000.0).reshape(1, 10, 10, 10))
    d = WindowIntensityd("image", modality="MR", percentiles=(0, 100))({"image": mr})
    assert d["image"].meta["intensity_window"] == pytest.approx([0.0, 999.0])
    with pytest.raises(ValueError, match="modality"):
        WindowIntensityd("image", modality="PET")


def test_reconstruction_scores_by_hand() -> None:
    target = torch.rand(1, 8, 16, 16) * 0.8 + 0.1
    acquired = acquired_mask(8, ratio=4, offset=0)
    assert acquired.tolist() == [True, False, False, False, True, False, False, False]
    pred = target.clone()
    pred[:, ~acquired] += 0.1  # error 0.1 on the 6 missing slices only
    s = reconstruction_scores(pred, target, acquired, window=(-1000, 1000))
    assert s["missing"]["psnr"] == pytest.approx(20.0, abs=1e-3)  # 10 log10(1 / 0.01)
    assert s["all"]["psnr"] == pytest.approx(10 * math.log10(1 / (0.01 * 6 / 8)), abs=1e-3)
    assert s["missing"]["mae"] == pytest.approx(200.0, rel=1e-4)  # 0.1 of a 2000 HU window
    assert s["all"]["mae"] == pytest.approx(150.0, rel=1e-4)
    assert s["missing"]["ssim"] < 1.0 and s["all"]["ssim"] > s["missing"]["ssim"]
    same = reconstruction_scores(target, target, acquired)
    assert same["all"]["ssim"] == pytest.approx(1.0, abs=1e-5) and same["all"]["mae"] == 0


def test_slice_ssim_mse_loss_is_mse_plus_the_evaluated_slice_ssim() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 1, 6, 20, 24)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_(True)
    mse = torch.nn.functional.mse_loss(pred.detach(), target)
    assert float(SliceSSIMMSELoss(ssim_weight=0.0)(pred, target).detach()) == pytest.approx(float(mse))
    # the SSIM term is 1 - the mean 2D SSIM of the depth slices, as reconstruction_scores measures it (7x7 window)
    every = torch.ones(6, dtype=torch.bool)
    ssim = [reconstruction_scores(pred[b].detach(), target[b], ~every)["all"]["ssim"] for b in range(2)]
    loss = SliceSSIMMSELoss(ssim_weight=0.5)(pred, target)
    assert float(loss.detach()) == pytest.approx(float(mse) + 0.5 * (1 - sum(ssim) / 2), rel=1e-4)
    loss.backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    assert float(SliceSSIMMSELoss(ssim_weight=0.5)(target, target)) == pytest.approx(0.0, abs=1e-5)
    # slices are taken across the depth axis: moving depth to the last axis gives the same value with depth_axis=2
    moved = SliceSSIMMSELoss(ssim_weight=0.5, depth_axis=2)(pred.movedim(2, 4), target.movedim(2, 4))
    assert float(moved.detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
    with pytest.raises(ValueError, match="one shape"):
        SliceSSIMMSELoss()(pred, target[:, :, :4])


def test_keep_acquired_slices_copies_measured_values_only() -> None:
    full = MetaTensor(torch.rand(1, 12, 8, 8))
    image = PrefixResampleZd("image", mode="trilinear")({"image": SubsampleZ(ratio=4, offset=2)(full)})["image"]
    pred = torch.zeros(1, 12, 8, 8)
    out = KeepAcquiredSlicesd("pred", ref_key="image")({"pred": pred, "image": image})["pred"]
    torch.testing.assert_close(out[:, 2::4], full[:, 2::4].as_tensor())
    assert float(out[:, 3].abs().sum()) == 0.0


def test_training_patches_from_thicker_slices_keep_the_target_and_its_sparse_input_aligned(tmp_path: Path) -> None:
    """ct_train.json's depth zoom (``depth_zoom_prob``: thicker slices by averaging, so a model trained on 2 mm slices
    also sees the gaps of 5 mm data) acts on the image before the target is copied from it: every patch's target is
    the zoomed volume and its input keeps every r-th slice of that target exactly."""
    from monai.bundle import ConfigParser

    path = save_nifti(tmp_path / "phantom.nii.gz", make_ct_phantom(1, shape=(40, 40, 60)), (3.0, 3.0, 1.0))
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / c) for c in ("train.json", "ct_train.json")])
    parser["bundle_root"] = str(tmp_path)
    # off by default (0): then the zoom is not in the chain at all, so it draws no seed and the default's
    # augmentation is what it was before the option existed
    default = [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms]
    assert "RandZoomd" not in default and default.count("CopyItemsd") == 1
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / c) for c in ("train.json", "ct_train.json")])
    parser.update({"bundle_root": str(tmp_path), "depth_zoom_prob": 1.0, "depth_zoom_min": 0.5, "ratio": 2,
                   "patch_size": [16, 32, 32], "samples_per_volume": 3})  # fmt: skip
    preprocess = parser.get_parsed_content("train#preprocessing")
    preprocess.set_random_state(3)
    depths = set()
    for _ in range(4):
        for patch in preprocess({"image": str(path)}):
            image, label = patch["image"], patch["label"]
            assert image.shape == label.shape == (1, 16, 32, 32)
            # the acquired slices (the random phase's) are the target's, the rest interpolated
            hits = [k for k in range(2) if torch.equal(image[:, k::2], label[:, k::2])]
            assert len(hits) == 1, "the input must keep every 2nd slice of the target exactly"
            depths.add(round(float(np.linalg.norm(label.affine[:3, 0].numpy())), 3))  # the target's slice spacing
    # 60 slices of 1 mm zoomed by [0.5, 1]: thicker than 1 mm, at most 2 mm (up to rounding of the slice count)
    assert all(1.0 < d <= 2.05 for d in depths) and len(depths) > 1, depths


def test_training_loss_sees_only_the_missing_slices(tmp_path: Path) -> None:
    """ct_train.json hands the trainer's network the acquisition mask of every patch (``AcquiredMaskd`` and
    ``PrepareBatchExtraInput``): the network's output on the acquired slices is its input there, as the evaluation's
    ``KeepAcquiredSlicesd`` makes it, so the loss's gradient comes from the missing slices alone. With
    ``keep_acquired`` false the evaluation scores every slice, and so does the training."""
    from monai.bundle import ConfigParser
    from monai.data import list_data_collate

    path = save_nifti(tmp_path / "phantom.nii.gz", make_ct_phantom(1, shape=(40, 40, 48)), (3.0, 3.0, 1.0))
    configs = [str(REPO / "bundle" / "configs" / c) for c in ("train.json", "ct_train.json")]
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(tmp_path), "ratio": 4, "patch_size": [16, 32, 32], "samples_per_volume": 3})
    preprocess = parser.get_parsed_content("train#preprocessing")
    preprocess.set_random_state(5)
    batch = list_data_collate(preprocess({"image": str(path)}))
    image, label, args, kwargs = parser.get_parsed_content("train#trainer#prepare_batch")(batch, "cpu")
    mask = kwargs["acquired"]
    assert args == () and mask.shape == (3, 1, 16, 1, 1)
    # the mask marks exactly the slices where the input holds the target's values (every 4th, at a random phase)
    for b in range(3):
        kept = [z for z in range(16) if torch.equal(image[b, :, z], label[b, :, z])]
        assert torch.nonzero(mask[b, 0, :, 0, 0]).reshape(-1).tolist() == kept and len(kept) == 4
    net = parser.get_parsed_content("network_def")
    for p_ in net.net.head.parameters():  # a trained-looking head: the zero-initialised one corrects nothing
        torch.nn.init.normal_(p_, std=0.1)
    pred = net(image.as_tensor(), **kwargs)
    on = mask.expand_as(pred) > 0
    torch.testing.assert_close(pred[on], image.as_tensor()[on], rtol=0, atol=0)
    assert float((pred - image.as_tensor())[~on].abs().max().detach()) > 0
    # a loss on the acquired slices alone trains nothing
    ((pred - label.as_tensor())[on] ** 2).sum().backward()
    assert all(float(p_.grad.abs().max()) == 0 for p_ in net.parameters() if p_.grad is not None)

    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(tmp_path), "keep_acquired": False, "patch_size": [16, 32, 32]})
    names = [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms]
    assert "AcquiredMaskd" not in names
    assert len(parser.get_parsed_content("train#trainer#prepare_batch")(batch, "cpu")) == 2


def test_evaluation_and_inference_average_the_mirrored_predictions(tmp_path: Path) -> None:
    """ct_evaluate.json and ct_inference.json score and write the mean of the predictions of the input mirrored
    along all three axes (``tta_flip_axes``); the validation inside training runs one pass; ``[]`` switches it off."""
    from monai.bundle import ConfigParser

    from sparsessp_monai.engines import FlipAveragingInferer

    configs = REPO / "bundle" / "configs"
    evaluate = [str(configs / c) for c in ("train.json", "ct_train.json", "evaluate.json", "ct_evaluate.json")]
    for files, evaluator, plain in (
        (evaluate, "validate#evaluator", "validate#inferer"),
        ([str(configs / c) for c in ("inference.json", "ct_inference.json")], "evaluator", "inferer"),
    ):
        for axes in ([0, 1, 2], []):
            parser = ConfigParser()
            parser.read_config(files)
            parser.update({"bundle_root": str(tmp_path), "tta_flip_axes": axes})
            inferer = parser.get_parsed_content(f"{evaluator}#inferer")
            assert isinstance(inferer, FlipAveragingInferer) and inferer.spatial_axes == tuple(axes)
            assert not isinstance(parser.get_parsed_content(plain), FlipAveragingInferer)
    parser = ConfigParser()
    parser.read_config([str(configs / c) for c in ("train.json", "ct_train.json")])
    parser["bundle_root"] = str(tmp_path)
    assert not isinstance(parser.get_parsed_content("validate#evaluator#inferer"), FlipAveragingInferer)


def test_ct_datalist_from_datalist_folder_or_errors(tmp_path: Path) -> None:
    lps = make_ct_phantom(1, shape=(16, 16, 12), spacing=(4.0, 4.0, 1.0))
    folder = tmp_path / "user"
    folder.mkdir()
    for name in ("b.nii.gz", "a.nii", "c.nii.gz"):
        save_nifti(folder / name, lps, (4.0, 4.0, 1.0))
    assert [Path(i["image"]).name for i in ct_datalist(folder, "training")] == ["a.nii", "b.nii.gz"]
    assert [Path(i["image"]).name for i in ct_datalist(folder, "validation")] == ["c.nii.gz"]
    with pytest.raises(ValueError, match="neither a datalist"):
        ct_datalist(tmp_path / "empty", "training")
    with pytest.raises(ValueError, match="too few"):
        ct_datalist(folder, "training", num_val=3)
    datalist = generate_ct_dataset(tmp_path / "demo", num_train=1, num_val=1, shape=(16, 16, 12))
    assert json.loads(Path(datalist).read_text())["validation"] == [{"image": "ct_001.nii.gz"}]
    mtime = (tmp_path / "demo" / "ct_000.nii.gz").stat().st_mtime_ns
    generate_ct_dataset(tmp_path / "demo", num_train=1, num_val=1, shape=(16, 16, 12))  # cached
    assert (tmp_path / "demo" / "ct_000.nii.gz").stat().st_mtime_ns == mtime


# --- the bundle configs end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ct_train.json`` for one epoch on tiny phantoms into a temporary bundle root."""
    return train_into(tmp_path_factory.mktemp("ct_bundle"), CT_TRAIN, "--train#trainer#max_epochs", "1", *TINY)


def test_training_and_evaluation_write_checkpoints_and_comparison_csv(trained: Path, run_bundle) -> None:
    assert (trained / "models" / "ct" / "model.pt").is_file()
    assert (trained / "models" / "ct" / "checkpoint_final.pt").is_file()
    proc = run_bundle("evaluating", "--config_file", CT_EVAL, "--bundle_root", str(trained), *TINY)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "PSNR model - cubic" in proc.stdout
    with open(trained / "eval" / "ct" / "thin_slice_per_volume.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["filename"].endswith("ct_001.nii.gz") and rows[0]["ratio"] == "4"
    for method in ("model", "trilinear", "cubic"):
        for subset in ("missing", "all"):
            assert 10 < float(rows[0][f"{method}_psnr_{subset}"]) < 80
            assert 0 < float(rows[0][f"{method}_mae_{subset}"]) < 500  # HU
    # acquired slices are exact for every method, so the error over all slices is 3/4 of that on the missing ones
    assert float(rows[0]["cubic_mae_all"]) == pytest.approx(0.75 * float(rows[0]["cubic_mae_missing"]), rel=1e-4)
    summary = json.loads((trained / "eval" / "ct" / "thin_slice_summary.json").read_text())
    assert summary["psnr_missing_model_minus_cubic"] == pytest.approx(
        summary["model_psnr_missing"] - summary["cubic_psnr_missing"]
    )


def test_inference_writes_thin_slices_with_the_ground_truth_affine(
    trained: Path, tmp_path: Path, run_bundle
) -> None:
    truth = trained / "data" / "ct_demo" / "ct_001.nii.gz"
    sparse_dir = Path(write_sparse_nifti([{"image": str(truth)}], tmp_path / "sparse", ratio=4))
    sparse = nib.load(sparse_dir / "ct_001.nii.gz")
    gt = nib.load(truth)
    assert nib.aff2axcodes(gt.affine) == ("L", "I", "P") and sparse.shape == (32, 10, 32)
    out = tmp_path / "pred"
    proc = run_bundle(
        "inference", "--config_file", CT_INFER, "--bundle_root", str(trained), "--dataset_dir", str(sparse_dir),
        "--output_dir", str(out), "--roi_size", "[32,32,32]",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    pred = nib.load(out / "ct_001_thin.nii.gz")
    # written in the input's storage orientation, on the thin grid of the original volume
    assert pred.shape == gt.shape
    np.testing.assert_allclose(pred.affine, gt.affine, atol=1e-4)
    p, g = pred.get_fdata(), np.clip(gt.get_fdata(), -1000, 1000)
    # acquired slices (every 4th from the inferior end, storage axis 1 runs superior -> inferior) are the input's
    np.testing.assert_allclose(p[:, 39::-4], g[:, 39::-4], atol=0.1)
    assert p.min() >= -1000 and p.max() <= 1000 and np.abs(p - g).mean() < 100
    assert not list(tmp_path.glob(".pred.staging-*"))


def _infer_in_process(root: Path, inputs: Path, out: Path, **extra) -> None:
    bundle_run(
        "inference",
        config_file=[str(REPO / "bundle" / "configs" / c) for c in ("inference.json", "ct_inference.json")],
        bundle_root=str(root),
        dataset_dir=str(inputs),
        output_dir=str(out),
        roi_size=[32, 32, 32],
        **extra,
    )


def _chain(e: BaseException | None) -> str:
    """The messages of an exception and of everything it was raised from (MONAI wraps transform errors)."""
    text = ""
    while e is not None:
        text += f"{type(e).__name__}: {e}\n"
        e = e.__cause__ or e.__context__
    return text


@pytest.mark.parametrize(
    "make, message",
    [
        ("flat", "3D volume"),
        ("nan", "NaN"),
        ("one_slice", "too few slices"),
        ("garbage", "bad.nii.gz"),
    ],
)
def test_inference_rejects_bad_volumes_and_leaves_no_output(trained: Path, tmp_path: Path, make, message) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    lps = make_ct_phantom(0, shape=(32, 32, 8), spacing=(3.0, 3.0, 4.0))
    save_nifti(inputs / "a_good.nii.gz", lps, (3.0, 3.0, 4.0))
    bad = inputs / "bad.nii.gz"
    if make == "flat":
        nib.save(nib.Nifti1Image(lps[:, :, 0], np.eye(4)), str(bad))
    elif make == "nan":
        lps = lps.copy()
        lps[3, 4, 5] = np.nan
        save_nifti(bad, lps, (3.0, 3.0, 4.0))
    elif make == "one_slice":
        save_nifti(bad, lps[:, :, :1], (3.0, 3.0, 4.0))
    else:
        bad.write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:  # MONAI wraps the transform's ValueError in a RuntimeError
        _infer_in_process(trained, inputs, out)
    assert message in _chain(err.value)
    assert not out.exists(), "a failed run must not publish the good file's prediction"
    assert not list(tmp_path.glob(".out.staging-*"))


# --- a real MR volume -------------------------------------------------------------------------------------------


@pytest.mark.skipif(not MNI.is_file(), reason=f"real MR volume not available: {MNI}")
def test_real_mr_crop_orientation_baselines_and_inference(trained: Path, tmp_path: Path) -> None:
    img = nib.load(str(MNI))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    # a 48 mm axial slab through the ventricles, 64 x 64 mm in-plane
    crop = img.slicer[66:130, 84:148, 90:138]
    path = tmp_path / "mni_crop.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(crop.dataobj, dtype=np.float32), crop.affine), str(path))
    pipeline = Compose(
        [
            LoadImaged("image", image_only=True, ensure_channel_first=True),
            Orientationd("image", axcodes="SPL", labels=LABELS),
            WindowIntensityd("image", modality="MR"),
            SubsampleZd("image", ratio=4),
        ]
    )
    d = pipeline({"image": str(path)})
    assert d["image"].shape == (1, 12, 64, 64)  # 48 axial slices at r = 4
    truth = WindowIntensityd("image", modality="MR")(
        {"image": Orientationd("image", axcodes="SPL", labels=LABELS)(
            LoadImaged("image", image_only=True, ensure_channel_first=True)({"image": str(path)}))["image"]}
    )["image"]  # fmt: skip
    mask = acquired_mask(48, 4, 0)
    scores = {
        mode: reconstruction_scores(PrefixResampleZd("image", mode=mode)(dict(d))["image"], truth, mask)
        for mode in ("nearest", "trilinear", "cubic")
    }
    # on real anatomy, interpolating between slices beats repeating them
    assert scores["cubic"]["missing"]["psnr"] > scores["nearest"]["missing"]["psnr"] + 1.0
    assert scores["trilinear"]["missing"]["psnr"] > scores["nearest"]["missing"]["psnr"] + 1.0
    assert scores["cubic"]["missing"]["psnr"] > 20

    # the trained bundle runs on the sparse real volume (MR window) and writes the thin grid in RAS storage
    sparse_dir = Path(write_sparse_nifti([{"image": str(path)}], tmp_path / "sparse", ratio=4))
    out = tmp_path / "pred"
    _infer_in_process(trained, sparse_dir, out, modality="MR")
    pred = nib.load(out / "mni_crop_thin.nii.gz")
    assert pred.shape == (64, 64, 48)
    np.testing.assert_allclose(pred.affine, crop.affine, atol=1e-4)
    assert np.isfinite(pred.get_fdata()).all()
