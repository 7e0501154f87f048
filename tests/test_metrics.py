"""Per-image regression metrics, their Ignite handlers and the per-structure report of a MONAI evaluator."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import PrepareBatchExtraInput, SupervisedEvaluator
from monai.handlers import MeanAbsoluteError, MeanSquaredError, from_engine

from sparsessp_monai.handlers import ImagePearson, ImageR2, PerStructureMetricsSaver
from sparsessp_monai.metrics import PearsonMetric, R2Metric, regression_scores

STRUCTURES = ["dna", "membrane", "mito"]


def np_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """float64 numpy reference for one image (any shape)."""
    p, t = pred.astype(np.float64).ravel(), target.astype(np.float64).ravel()
    ss_tot = ((t - t.mean()) ** 2).sum()
    return {
        "mse": float(((t - p) ** 2).mean()),
        "mae": float(np.abs(t - p).mean()),
        "r2": float(1.0 - ((t - p) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "pearson": float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else float("nan"),
    }


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_scores_match_numpy_per_image() -> None:
    target = randn(3, 2, 4, 5, 6, seed=0)
    pred = 0.7 * target + 0.5 * randn(3, 2, 4, 5, 6, seed=1) + 0.2
    scores = regression_scores(pred, target)
    assert set(scores) == {"mse", "mae", "r2", "pearson"}
    for b in range(3):
        ref = np_scores(pred[b].numpy(), target[b].numpy())
        for name, value in ref.items():
            assert scores[name].shape == (3,) and scores[name].dtype == torch.float64
            assert scores[name][b].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_perfect_and_inverted_prediction() -> None:
    target = randn(2, 1, 4, 5, 6)
    perfect = regression_scores(target, target)
    assert torch.equal(perfect["mse"], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(perfect["mae"], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(perfect["r2"], torch.ones(2, dtype=torch.float64))
    assert torch.allclose(perfect["pearson"], torch.ones(2, dtype=torch.float64))

    inverted = regression_scores(-target, target)
    assert torch.allclose(inverted["pearson"], -torch.ones(2, dtype=torch.float64))
    for b in range(2):
        assert inverted["r2"][b].item() == pytest.approx(np_scores(-target[b].numpy(), target[b].numpy())["r2"])
    # a scaled, shifted prediction is perfectly correlated but not a perfect R2
    affine = regression_scores(3.0 * target + 1.0, target)
    assert torch.allclose(affine["pearson"], torch.ones(2, dtype=torch.float64))
    assert bool((affine["r2"] < 0).all())


def test_constant_images_are_nan_and_skipped_by_aggregation() -> None:
    target = randn(3, 1, 4, 5, 6)
    target[1] = 2.5  # constant target: R2 and correlation are undefined
    pred = target + 0.1 * randn(3, 1, 4, 5, 6, seed=3)
    pred[2] = 0.0  # constant prediction: correlation undefined, R2 still defined
    scores = regression_scores(pred, target)
    assert torch.isnan(scores["r2"][1]) and torch.isnan(scores["pearson"][1])
    assert torch.isnan(scores["pearson"][2]) and torch.isfinite(scores["r2"][2])
    assert bool(torch.isfinite(scores["mse"]).all())
    # a perfect prediction of a constant target is still undefined, not a crash or inf
    assert torch.isnan(regression_scores(target[1:2], target[1:2])["r2"]).all()

    metric = R2Metric(get_not_nans=True)
    metric(pred[:2], target[:2])
    metric(pred[2:], target[2:])  # accumulates across iterations like any MONAI cumulative metric
    value, not_nans = metric.aggregate()
    valid = scores["r2"][[0, 2]]
    assert value.item() == pytest.approx(valid.mean().item())
    assert not_nans.item() == 2
    pearson = PearsonMetric()
    pearson(pred, target)
    assert pearson.aggregate().item() == pytest.approx(scores["pearson"][0].item())


def test_float64_accuracy_on_large_offset_volume() -> None:
    # ~5.2M voxels on a camera-like offset: float32 centred sums would be off in the 3rd-4th digit
    shape = (1, 1, 40, 360, 360)
    target = (1000.0 + randn(*shape, seed=4)).float()
    pred = (target + 0.5 * randn(*shape, seed=5)).float()
    scores = regression_scores(pred, target)
    ref = np_scores(pred.numpy(), target.numpy())
    assert scores["r2"].item() == pytest.approx(ref["r2"], abs=1e-6)
    assert scores["pearson"].item() == pytest.approx(ref["pearson"], abs=1e-6)
    assert scores["mse"].item() == pytest.approx(ref["mse"], rel=1e-4)
    # the expected values themselves: R2 = 1 - 0.25 and r = 1 / sqrt(1.25) up to sampling noise
    assert scores["r2"].item() == pytest.approx(0.75, abs=2e-3)
    assert scores["pearson"].item() == pytest.approx(1.0 / np.sqrt(1.25), abs=2e-3)


def test_metric_inputs_lists_metatensors_and_shape_errors() -> None:
    target = randn(2, 1, 3, 4, 5)
    pred = target + randn(2, 1, 3, 4, 5, seed=6)
    batch = R2Metric(reduction="none")(pred, target)
    as_list = R2Metric(reduction="none")([p for p in MetaTensor(pred)], [t for t in MetaTensor(target)])
    assert batch.shape == (2, 1) and not isinstance(batch, MetaTensor)
    assert torch.allclose(torch.as_tensor(as_list), batch)
    # MetaTensor and half-precision (autocast) inputs give plain float64 scores equal to the float32 ones
    scores = regression_scores(MetaTensor(pred).bfloat16(), MetaTensor(target))
    reference = regression_scores(pred.bfloat16().float(), target)
    for name, value in scores.items():
        assert type(value) is torch.Tensor and value.dtype == torch.float64
        assert torch.allclose(value, reference[name]), name
    with pytest.raises(ValueError, match="shapes"):
        regression_scores(pred, target[:, :, :2])


class TaskBias(torch.nn.Module):
    """Identity plus a per-task bias: each structure gets a different, known error."""

    def __init__(self, biases: list[float]) -> None:
        super().__init__()
        self.register_buffer("bias", torch.tensor(biases))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return x + self.bias[task].view(-1, *([1] * (x.ndim - 1)))


BIASES = [0.0, 0.3, -0.8]
TASKS = [0, 1, 2, 0, 2, 2, 1]  # uneven counts per structure, so macro and micro averages differ


def make_data(with_meta: bool = True, tasks: list[int] = TASKS, seed: int = 0) -> list[dict]:
    data = []
    for i, task in enumerate(tasks):
        label = randn(1, 4, 6, 6, seed=seed + 100 + i)
        image = label + (0.2 + 0.1 * i) * randn(1, 4, 6, 6, seed=seed + 200 + i)
        if with_meta:
            image = MetaTensor(image, meta={"filename_or_obj": f"/data/{STRUCTURES[task]}/cell_{seed}_{i}.tif"})
        data.append({"image": image, "label": label, "task": task, "structure": STRUCTURES[task]})
    return data


def expected_scores(data: list[dict]) -> list[dict[str, float]]:
    """numpy per-image scores of the TaskBias prediction."""
    rows = []
    for d in data:
        pred = np.asarray(d["image"]) + BIASES[d["task"]]
        rows.append(np_scores(pred, np.asarray(d["label"])))
    return rows


def make_evaluator(data: list[dict], saver: PerStructureMetricsSaver, decollate: bool) -> SupervisedEvaluator:
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=2, shuffle=False, num_workers=0),
        network=TaskBias(BIASES),
        prepare_batch=PrepareBatchExtraInput({"task": "task"}),
        key_val_metric={"val_r2": ImageR2(output_transform=from_engine(["pred", "label"]), save_details=True)},
        additional_metrics={
            "val_mse": MeanSquaredError(output_transform=from_engine(["pred", "label"]), save_details=True),
            "val_mae": MeanAbsoluteError(output_transform=from_engine(["pred", "label"]), save_details=True),
            "val_pearson": ImagePearson(output_transform=from_engine(["pred", "label"]), save_details=True),
        },
        val_handlers=[saver],
        decollate=decollate,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("decollate", [True, False])
def test_evaluator_end_to_end_per_structure_report(
    tmp_path: Path, decollate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_data()
    saver = PerStructureMetricsSaver(STRUCTURES, save_dir=str(tmp_path / "report"))
    evaluator = make_evaluator(data, saver, decollate)
    with caplog.at_level(logging.INFO, logger="PerStructureMetricsSaver"):
        evaluator.run()

    names = {"val_r2": "r2", "val_mse": "mse", "val_mae": "mae", "val_pearson": "pearson"}
    per_image = expected_scores(data)
    metrics = evaluator.state.metrics
    # MONAI stores (N_images, 1) per metric; the saver uses exactly those values
    assert tuple(evaluator.state.metric_details["val_r2"].shape) == (len(data), 1)

    rows = read_csv(tmp_path / "report" / "metrics_per_image.csv")
    assert list(rows[0]) == ["filename", "structure", "task", *names]
    assert [r["filename"] for r in rows] == [str(d["image"].meta["filename_or_obj"]) for d in data]
    assert [r["structure"] for r in rows] == [d["structure"] for d in data]
    assert [int(r["task"]) for r in rows] == TASKS
    for row, ref in zip(rows, per_image):
        for col, key in names.items():
            assert float(row[col]) == pytest.approx(ref[key], rel=1e-5, abs=1e-6)

    summary = {r["structure"]: r for r in read_csv(tmp_path / "report" / "metrics_per_structure.csv")}
    assert list(summary) == [*STRUCTURES, "all", "all_images"]
    structure_means = {}
    for task, structure in enumerate(STRUCTURES):
        idx = [i for i, t in enumerate(TASKS) if t == task]
        assert int(summary[structure]["n_images"]) == len(idx)
        for col, key in names.items():
            mean = float(np.mean([per_image[i][key] for i in idx]))
            structure_means[(structure, col)] = mean
            assert float(summary[structure][col]) == pytest.approx(mean, rel=1e-5, abs=1e-6)
            assert metrics[f"{col}/{structure}"] == pytest.approx(mean, rel=1e-5, abs=1e-6)
    for col, key in names.items():
        macro = np.mean([structure_means[(s, col)] for s in STRUCTURES])
        micro = np.mean([r[key] for r in per_image])
        assert float(summary["all"][col]) == pytest.approx(macro, rel=1e-5, abs=1e-6)
        assert metrics[f"{col}/all"] == pytest.approx(macro, rel=1e-5, abs=1e-6)
        assert float(summary["all_images"][col]) == pytest.approx(micro, rel=1e-5, abs=1e-6)
        # the engine's own mean over images agrees with the report
        assert metrics[col] == pytest.approx(micro, rel=1e-5, abs=1e-6)
    assert int(summary["all"]["n_images"]) == len(data)
    assert "metrics per structure" in caplog.text and "membrane" in caplog.text
    assert not list((tmp_path / "report").glob("*.tmp"))

    # a second run (next validation round) starts from scratch instead of appending
    evaluator.run()
    assert len(read_csv(tmp_path / "report" / "metrics_per_image.csv")) == len(data)


def test_saver_without_meta_without_files_and_with_selected_metrics(tmp_path: Path) -> None:
    data = make_data(with_meta=False, tasks=[0, 0, 1])
    saver = PerStructureMetricsSaver(STRUCTURES, metric_names=["val_r2", "val_missing"])
    evaluator = make_evaluator(data, saver, decollate=True)
    with pytest.warns(UserWarning, match="val_missing"):
        evaluator.run()
    assert set(saver.per_structure) == {"dna", "membrane", "all", "all_images"}
    assert set(saver.per_structure["dna"]) == {"n_images", "val_r2"}
    assert [r["filename"] for r in saver.per_image] == ["", "", ""]
    assert "val_mse/dna" not in evaluator.state.metrics and "val_r2/membrane" in evaluator.state.metrics
    assert not list(tmp_path.iterdir())  # save_dir=None writes nothing
    assert saver.structure_name(5) == "task_5"


def test_saver_rejects_bad_structures() -> None:
    with pytest.raises(ValueError, match="reserved"):
        PerStructureMetricsSaver(["dna", "all"])
    with pytest.raises(ValueError, match="unique"):
        PerStructureMetricsSaver(["dna", "dna"])
    with pytest.raises(ValueError, match="at least one"):
        PerStructureMetricsSaver([])


def _ddp_worker(local_rank: int, tmp_dir: str) -> None:
    import ignite.distributed as idist

    rank = idist.get_rank()
    # uneven shards (4 and 3 images) and an empty name list on rank 1 for the string gather
    data = make_data(tasks=TASKS[:4] if rank == 0 else TASKS[4:], seed=10 * rank)
    saver = PerStructureMetricsSaver(STRUCTURES, save_dir=tmp_dir)
    evaluator = make_evaluator(data, saver, decollate=True)
    evaluator.run()
    assert evaluator.state.metrics["val_r2/mito"] == saver.per_structure["mito"]["val_r2"]
    # file names gathered in rank order, each beside its own task id, on every rank
    expected = [f"/data/{STRUCTURES[t]}/cell_{10 * r}_{i}.tif" for r, part in enumerate((TASKS[:4], TASKS[4:]))
                for i, t in enumerate(part)]
    assert [row["filename"] for row in saver.per_image] == expected
    assert [row["task"] for row in saver.per_image] == TASKS


def test_distributed_gather_order(tmp_path: Path) -> None:
    idist = pytest.importorskip("ignite.distributed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_ddp_worker, str(tmp_path))

    data = make_data(tasks=TASKS[:4], seed=0) + make_data(tasks=TASKS[4:], seed=10)
    rows = read_csv(tmp_path / "metrics_per_image.csv")
    assert [r["filename"] for r in rows] == [str(d["image"].meta["filename_or_obj"]) for d in data]
    for row, ref in zip(rows, expected_scores(data)):
        assert float(row["val_r2"]) == pytest.approx(ref["r2"], rel=1e-5, abs=1e-6)
        assert float(row["val_pearson"]) == pytest.approx(ref["pearson"], rel=1e-5, abs=1e-6)
