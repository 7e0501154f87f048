"""End-to-end tests of scripts/benchmark.py, scripts/study.py and scripts/make_results.py, and of the claim checker."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsessp_monai.experiments import benchmarking as bm
from sparsessp_monai.experiments.claims import check_claims
from sparsessp_monai.experiments.study import Variant, default_variants, macro_scores

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def _run(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _row(topology: str, ratio: int, r2: float, z: str = "prefix", mode: str = "trilinear", emb: str = "3d",
         eval_ratio: int | None = None) -> dict:
    return {"topology": topology, "ratio": ratio, "z_mapping": z, "prefix_mode": mode, "embedding": emb,
            "eval_ratio": ratio if eval_ratio is None else eval_ratio, "r2": r2}


def _table(r2_3to2d: dict, r2_3d: dict, nearest: float, suffix: float, emb2d: float) -> list[dict]:
    rows = [_row("3to2d", r, v) for r, v in r2_3to2d.items()] + [_row("3d", r, v) for r, v in r2_3d.items()]
    rows += [_row("3to2d", 4, nearest, mode="nearest"), _row("3to2d", 4, suffix, z="suffix"),
             _row("3to2d", 4, emb2d, emb="2d")]
    # a generalisation row must not count as the r=4 result of the r=1 model
    rows.append(_row("3to2d", 1, -5.0, eval_ratio=4))
    return rows


def _verdicts(claims) -> list[str]:
    return [c.verdict for c in claims]


def test_claims_confirmed_and_refuted_on_hand_made_tables():
    good = _table({1: 0.80, 2: 0.79, 4: 0.77, 8: 0.70}, {1: 0.75, 2: 0.76, 4: 0.72, 8: 0.62}, 0.76, 0.60, 0.70)
    claims = check_claims(good)
    assert _verdicts(claims) == ["confirmed"] * 6
    assert "+0.0300" in claims[0].margin and "r=2" in claims[0].margin  # smallest margin and where
    assert "+0.1600" in claims[2].margin  # min(0.77, 0.76) - 0.60
    assert "+0.0300" in claims[4].margin  # r=1 -> r=4 drop

    # 3d wins at r=8 only; suffix beats nearest prefix; 2D embedding wins; r=4 costs a lot; r=8 is no worse
    bad = _table({1: 0.80, 2: 0.79, 4: 0.70, 8: 0.70}, {1: 0.75, 2: 0.74, 4: 0.69, 8: 0.71}, 0.60, 0.65, 0.75)
    claims = check_claims(bad)
    assert _verdicts(claims) == ["refuted", "confirmed", "refuted", "refuted", "refuted", "refuted"]
    assert "-0.0100" in claims[0].margin and "r=8" in claims[0].margin
    assert "-0.0500" in claims[2].margin

    # thresholds are parameters
    assert check_claims(bad, little_drop=0.2)[4].verdict == "confirmed"

    # missing variants are reported, not guessed; NaN counts as missing
    partial = [_row("3to2d", 4, 0.7), _row("3d", 4, float("nan"))]
    assert set(_verdicts(check_claims(partial))) == {"not evaluated"}


def test_macro_scores_average_per_structure_first():
    rows = [
        {"structure": "dna", "mse": 1.0, "mae": 1.0, "r2": 0.9, "pearson": 0.9},
        {"structure": "dna", "mse": 3.0, "mae": 1.0, "r2": 0.7, "pearson": float("nan")},
        {"structure": "actin", "mse": 0.0, "mae": 1.0, "r2": 0.2, "pearson": 0.5},
    ]
    scores = macro_scores(rows)
    assert scores["mse"] == pytest.approx((2.0 + 0.0) / 2)
    assert scores["r2"] == pytest.approx((0.8 + 0.2) / 2)  # not the image mean 0.6
    assert scores["pearson"] == pytest.approx((0.9 + 0.5) / 2)  # NaN skipped


def test_default_variants_cover_the_study():
    names = [v.name for v in default_variants()]
    assert len(names) == len(set(names)) == 19
    assert Variant(topology="3to2d", ratio=4, z_mapping="suffix").name in names
    assert "3to2d-r4-prefix_trilinear-emb2d" in names and "3to2d-r4-prefix_nearest-emb3d" in names


def test_study_quick_end_to_end_and_resume(tmp_path):
    args = ["--quick", "--device", "cpu", "--bf16", "off", "--out", str(tmp_path), "--only", "3to2d-r4", "3d-r4"]
    out = _run("study.py", *args)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "study_cpu_quick.csv").open()))
    names = {r["variant"] for r in rows}
    assert {"3d-r4-prefix_trilinear-emb3d", "3to2d-r4-suffix-emb3d", "3to2d-r4-prefix_trilinear-emb2d"} <= names
    assert all(math.isfinite(float(r["mse"])) for r in rows)
    # 3to2d is evaluated at r=1 too (ratio generalisation)
    assert any(r["variant"].startswith("3to2d-r4-prefix_trilinear-emb3d") and r["eval_ratio"] == "1" for r in rows)
    md = (tmp_path / "study_cpu_quick.md").read_text()
    assert md.splitlines()[2].startswith("Command: `python scripts/study.py --quick")
    assert "| 3to2d at least as accurate as 3d at r=4 |" in md
    cache = json.loads((tmp_path / "study_cpu_quick_cache.json").read_text())
    assert len(cache["variants"]) == len(names)

    again = _run("study.py", *args)  # everything comes from the cache
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": cached") == len(names)

    bad = _run("study.py", "--quick", "--out", str(tmp_path / "bad"), "--only", "no-such-variant")
    assert bad.returncode == 2 and "no variant matches" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_benchmark_quick_end_to_end_with_checkpoint(tmp_path):
    # a checkpoint of the quick-mode network, so the bf16-vs-fp32 comparison runs on real weights
    overrides = {"patch_size": [8, 32, 32], "val_roi_size": [8, 32, 32]}
    net = bm.build_network(ROOT / "bundle" / "configs" / "train.json", overrides)
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    out_dir = tmp_path / "docs"
    args = ["--quick", "--device", "cpu", "--topologies", "3to2d", "2d", "--precisions", "fp32",
            "--checkpoint", str(ckpt), "--out", str(out_dir)]
    out = _run("benchmark.py", *args)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((out_dir / "benchmark_cpu_quick.csv").open()))
    assert [(r["topology"], r["precision"]) for r in rows] == [("3to2d", "fp32"), ("2d", "fp32")]
    default = rows[0]
    for key in ("params_m", "gflop", "train_s", "infer_s", "patch_peak_mib", "volume_s", "volume_peak_mib"):
        assert float(default[key]) > 0, key
    assert rows[1]["volume_s"] == ""  # full volume for the default model only
    assert float(default["params_m"]) == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)
    assert float(default["bf16_max_abs_diff"]) >= float(default["bf16_mean_abs_diff"]) > 0
    assert math.isfinite(float(default["bf16_r2_change"]))
    md = (out_dir / "benchmark_cpu_quick.md").read_text()
    assert "Command: `python scripts/benchmark.py --quick" in md
    assert "| 3to2d (default) | fp32 |" in md and "R2 change" in md
    assert (out_dir / "benchmark_cpu_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # results.md gathers both reports, marked preliminary
    study_md = out_dir / "study_cpu_quick.md"
    study_md.write_text("# Study (cpu)\n\nCommand: `python scripts/study.py --quick`\n")
    made = _run("make_results.py", "--docs", str(out_dir))
    assert made.returncode == 0, made.stderr
    results = (out_dir / "results.md").read_text()
    assert results.count("PRELIMINARY") == 2 and "### Benchmark (cpu)" in results
    assert results.index("Speed and memory") < results.index("Accuracy study")


def test_benchmark_bad_input_fails_without_output(tmp_path):
    out = _run("benchmark.py", "--quick", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "checkpoint not found" in out.stderr
    out = _run("benchmark.py", "--quick", "--override", "no_equals_sign", "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "ID=JSON" in out.stderr
    assert not (tmp_path / "o").exists()
    made = _run("make_results.py", "--docs", str(tmp_path))
    assert made.returncode == 2 and not (tmp_path / "results.md").exists()


def test_median_time_counts_calls_and_returns_the_median():
    calls = []
    threads = torch.get_num_threads()
    seconds = bm.median_time(lambda: calls.append(torch.get_num_threads()), torch.device("cpu"), warmup=3, repeats=4)
    assert len(calls) == bm.timed_calls(3, 4) == 3 + 4 * (1 + bm.TIMER_WARMUP_CALLS)
    assert set(calls) == {threads}  # timed with the caller's threads, not the Timer's default of one
    assert 0 < seconds < 1


def test_write_csv_and_bar_chart(tmp_path):
    path = bm.write_csv(tmp_path / "rows.csv", [{"a": 1, "b": 2.5}, {"a": 3, "c": "x"}])
    assert list(csv.DictReader(path.open())) == [{"a": "1", "b": "2.5", "c": ""}, {"a": "3", "b": "", "c": "x"}]
    png = bm.bar_chart_png(tmp_path / "sub" / "chart.png", ["g1", "g2"], {"s1": [1.0, 2.0], "s2": [0.5, 3.0]},
                           "title", "seconds")
    assert png == tmp_path / "sub" / "chart.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["chart.png"]  # no temporary file left behind
