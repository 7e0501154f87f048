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
from sparsessp_monai.experiments import front, sweeps
from sparsessp_monai.experiments.claims import check_bars, check_claims
from sparsessp_monai.experiments.study import CONFIG_DIR, StudySettings, variant_key
from sparsessp_monai.experiments.study_worker import read_scores

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


def test_claims_use_baseline_rows_only():
    good = _table({1: 0.80, 2: 0.79, 4: 0.77, 8: 0.70}, {1: 0.75, 2: 0.76, 4: 0.72, 8: 0.62}, 0.76, 0.60, 0.70)
    # a wider 3to2d with the same claim axes must not stand in for the default
    wide = [{**_row("3to2d", r, 0.10), "baseline": False} for r in (1, 2, 4, 8)]
    assert _verdicts(check_claims(good + wide)) == ["confirmed"] * 6
    csv_like = [{**row, "baseline": "True"} for row in good] + [{**row, "baseline": "False"} for row in wide]
    assert _verdicts(check_claims(csv_like)) == ["confirmed"] * 6


def _cost_row(topology: str, ratio: int, r2: float, step: float, default: bool = False, **extra) -> dict:
    return {**_row(topology, ratio, r2), "default": default, "baseline": True, "train_step_s": step,
            "features_3d": [16, 32, 64, 128], **extra}


def test_time_to_r2_and_the_curve_section():
    from sparsessp_monai.experiments.claims import curve_section, time_to_r2

    curve = [{"epoch": 2, "iteration": 72, "train_s": 50.0, "r2": 0.4},
             {"epoch": 4, "iteration": 144, "train_s": 101.0, "r2": 0.58},
             {"epoch": 6, "iteration": 216, "train_s": 150.0, "r2": 0.56}]
    assert time_to_r2(curve, 0.57) == 101.0 and time_to_r2(curve, 0.6) is None
    rows = [{"variant": "a", "ratio": 4, "eval_ratio": 4, "curve": curve},
            {"variant": "b", "ratio": 4, "eval_ratio": 4, "curve": curve[:1]},  # validated once: no curve
            {"variant": "a", "ratio": 4, "eval_ratio": 8, "curve": curve}]  # generalisation row: not repeated
    text = "\n".join(curve_section(rows, 0.57))
    assert "| a | 101 | 0.400 @ 50 s (ep 2), 0.580 @ 101 s (ep 4), 0.560 @ 150 s (ep 6) |" in text
    assert "| b |" not in text and text.count("| a |") == 1
    assert curve_section(rows[1:2], 0.57) == []


def test_bars_need_accuracy_and_half_the_step_time():
    rows = [_cost_row("3to2d", 4, 0.70, 0.5, default=True), _cost_row("3d", 4, 0.69, 1.2),
            _cost_row("3to2d", 8, 0.60, 0.5, default=True), _cost_row("3d", 8, 0.62, 1.2),
            _cost_row("3d", 4, 0.99, 9.0, features_3d=[32, 64, 128, 256])]  # another encoder: not the rival
    bars = check_bars(rows)
    assert _verdicts(bars) == ["confirmed", "refuted"]
    assert "+0.0100" in bars[0].margin and "0.42x" in bars[0].margin
    slow = [_cost_row("3to2d", 4, 0.70, 0.7, default=True), _cost_row("3d", 4, 0.69, 1.2)]
    assert _verdicts(check_bars(slow, [4])) == ["refuted"]  # accurate enough but not twice as fast
    assert _verdicts(check_bars(rows[:1], [4])) == ["not evaluated"]
    # a 3d default: the bar is about the method, the baseline 3to2d with the default's encoder, against that 3d
    three_d_default = [_cost_row("3d", 4, 0.69, 1.2, default=True), _cost_row("3to2d", 4, 0.60, 0.5),
                       _cost_row("3to2d", 4, 0.99, 0.1, features_3d=[32, 64, 128, 256])]
    (bar,) = check_bars(three_d_default, [4])
    assert bar.verdict == "refuted" and "R2 0.6000 vs 0.6900" in bar.margin


def test_read_scores_takes_the_macro_row(tmp_path):
    # the bundle's PerStructureMetricsSaver report: the "all" row is the mean over structures
    (tmp_path / "metrics_per_structure.csv").write_text(
        "structure,n_images,val_r2,val_mse,val_mae,val_pearson\n"
        "dna,2,0.8,2.0,1.0,0.9\nactin,1,0.2,0.0,1.0,0.5\n"
        "all,3,0.5,1.0,1.0,0.7\nall_images,3,0.6,1.3,1.0,0.77\n"
    )
    scores = read_scores(tmp_path)
    assert scores["r2"] == pytest.approx(0.5) and scores["mse"] == pytest.approx(1.0)
    assert scores["pearson"] == pytest.approx(0.7) and scores["images"] == 3
    assert scores["r2_per_structure"] == {"dna": 0.8, "actin": 0.2}


def test_claim_variants_cover_the_study():
    variants = sweeps.claim_variants(CONFIG_DIR / "train.json")
    names = [v.name for v in variants]
    assert len(names) == len(set(names)) == 19
    assert "3to2d-r4-suffix-emb3d" in names
    assert "3to2d-r4-prefix_trilinear-emb2d" in names and "3to2d-r4-prefix_nearest-emb3d" in names
    assert all(v.baseline and v.group == "claims" for v in variants)
    by_name = {v.name: v for v in variants}
    own = bm.load_config(CONFIG_DIR / "train.json")["network_def"]["topology"]
    assert by_name[f"{own}-r4-prefix_trilinear-emb3d"].overrides == {}  # the config itself (r = 4 is its ratio)
    assert by_name["2d-r8-prefix_trilinear-emb3d"].overrides == {"network_def#topology": "2d", "ratio": 8}
    assert by_name["3to2d-r2-prefix_trilinear-emb3d"].eval_ratios == (1, 2, 4, 8)


def test_suffix_variant_feeds_the_sparse_stack():
    from monai.bundle import ConfigParser

    suffix = {v.name: v for v in sweeps.claim_variants(CONFIG_DIR / "train.json")}["3to2d-r4-suffix-emb3d"]
    parser = ConfigParser()
    parser.read_config(str(CONFIG_DIR / "train.json"))
    parser.update(suffix.overrides)
    names = lambda key: [type(t).__name__ for t in parser.get_parsed_content(key).transforms]  # noqa: E731
    assert "PrefixResampleZd" not in names("train#preprocessing") + names("validate#preprocessing")
    assert "RandSubsampleZd" in names("train#preprocessing")
    assert parser.get_parsed_content("validate#inferer#inferer#roi_size") == [8, 128, 128]
    assert parser.get_parsed_content("network_def").z_mapping == "suffix"


def test_front_sweep_lists_the_issue_points():
    config = CONFIG_DIR / "train.json"
    variants = {v.name: v for v in sweeps.front_variants(config)}
    e = bm.load_config(config).get_parsed_content("network_def#features_3d")[0]  # the config's encoder
    for r in (4, 8):
        for c, width in ((1, 32), (2, 64), (4, 128), (8, 256)):  # channels per output slice at depth 32
            v = variants[f"3to2d-c{c}-e{e}-r{r}"]
            assert v.overrides.get("network_def#features_2d", [32])[0] == width
        assert {f"3d-e{w}-r{r}" for w in (8, 16, 32)} <= set(variants)
        assert variants[f"3to2d-c1-e{e}-emb2d-r{r}"].overrides["network_def#embedding"] == "2d"
        assert {f"3to2d-c1-e{w}-r{r}" for w in (8, 16, 32)} <= set(variants)
    # the 3d network that shares 3to2d's encoder: the config's own widths
    assert "network_def#features_3d" not in variants[f"3d-e{e}-r4"].overrides
    # the same model in two sets has one cache key, so it is trained once
    settings = StudySettings.quick()
    claims_3to2d = {v.name: v for v in sweeps.claim_variants(config)}["3to2d-r4-prefix_trilinear-emb3d"]
    assert variant_key(settings, claims_3to2d) == variant_key(settings, variants[f"3to2d-c1-e{e}-r4"])
    loss = sweeps.loss_variants(config, (4,), [f"3to2d-c4-e{e}"])
    assert [v.name for v in loss] == [f"3to2d-c4-e{e}-r4-l1"] and loss[0].overrides["loss"] == "$torch.nn.L1Loss()"
    data = sweeps.data_variants(config, (4,))
    assert sorted(v.overrides["demo#num_per_structure"] for v in data) == [4, 4, 16, 16, 64, 64]
    assert {v.name.rsplit("-r", 1)[0] for v in data} == {f"3to2d-c1-e{e}", f"3d-e{e}"}
    with pytest.raises(ValueError, match="no front variant"):
        sweeps.loss_variants(config, (4,), ["nope"])


def test_study_dry_run_prints_the_sweep():
    out = _run("study.py", "--sweep", "front", "loss", "data", "--dry-run", "--epochs", "3")
    assert out.returncode == 0, out.stderr
    assert '"train#trainer#max_epochs": 3' in out.stdout and '"train#trainer#epoch_length": 36' in out.stdout
    e = bm.load_config(CONFIG_DIR / "train.json")["network_def"]["features_3d"][0]
    assert f"3to2d-c8-e{e}-r8 [front]: " in out.stdout and f"3d-e{e}-r4-n64 [data]: " in out.stdout
    assert f"3to2d-c1-e{e}-r4-l1 [loss]: " in out.stdout
    assert f"3to2d-c1-e{e}-emb2d-k5-r8 [front]: " in out.stdout and '"network_def#bridge_kernel": 5' in out.stdout
    assert "42 variants, 3 epochs x 36 steps each" in out.stdout


def test_pareto_front_and_picture(tmp_path):
    assert front.pareto_front([(1.0, 0.5), (2.0, 0.4), (0.5, 0.3), (3.0, 0.9), (2.0, float("nan"))]) == [2, 0, 3]
    rows = []
    for r in (4, 8):
        for name, topology, step, r2, default in (("3to2d-c1-e16", "3to2d", 0.5, 0.62, True),
                                                  ("3to2d-c2-e16", "3to2d", 0.7, 0.66, False),
                                                  ("3to2d-c8-e16", "3to2d", 2.9, 0.60, False),
                                                  ("3d-e16", "3d", 1.9, 0.70, False)):
            rows.append({"variant": f"{name}-r{r}", "group": "front", "topology": topology, "ratio": r,
                         "eval_ratio": r, "r2": r2 - r / 100, "pearson": 0.8, "mae": 0.3, "params_m": 1.0,
                         "gflop": 5.0, "train_step_s": step, "infer_s": 0.1, "train_peak_mib": 800.0,
                         "features_3d": [16, 32, 64, 128], "features_2d": [32, 64, 128, 256], "embedding": "3d",
                         "loss": "MSELoss()", "default": default})
    rows.append({**rows[0], "variant": "3to2d-c1-e16-r4-n64", "group": "data"})  # other data: not on the picture
    png, md = front.write_front(rows, tmp_path / "docs", "python scripts/study.py --sweep front")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sorted(p.name for p in png.parent.iterdir()) == [
        "study_front.md", "study_front.png"]  # nothing temporary left
    text = md.read_text()
    assert "Command: `python scripts/study.py --sweep front`" in text and "## r = 4" in text and "## r = 8" in text
    assert "| 3to2d-c1-e16-r4 (default) |" in text and "n64" not in text
    on_front = [line.split(" | ")[0] for line in text.splitlines() if line.endswith("| yes |")]
    expected = [[f"| 3to2d-c1-e16-r{r} (default)", f"| 3to2d-c2-e16-r{r}", f"| 3d-e16-r{r}"] for r in (4, 8)]
    assert on_front == expected[0] + expected[1]


STUDY_VARIANTS = ["3to2d-r4-prefix_trilinear-emb3d", "3d-r4-prefix_trilinear-emb3d"]


def test_study_quick_runs_the_bundle_and_resumes(tmp_path):
    args = ["--quick", "--device", "cpu", "--bf16", "off", "--threads", "1", "--out", str(tmp_path),
            "--work", str(tmp_path / "runs"), "--ratios", "1", "4", "--only", *(f"^{v}$" for v in STUDY_VARIANTS)]
    out = _run("study.py", *args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "study_cpu_quick.csv").open()))
    assert {r["variant"] for r in rows} == set(STUDY_VARIANTS)
    assert all(math.isfinite(float(r[m])) for r in rows for m in ("mse", "mae", "r2", "pearson"))
    # 3to2d is evaluated at r=1 too (ratio generalisation, evaluate.json merged on train.json)
    assert any(r["variant"] == STUDY_VARIANTS[0] and r["eval_ratio"] == "1" for r in rows)
    md = (tmp_path / "study_cpu_quick.md").read_text()
    assert md.splitlines()[2].startswith("Command: `python scripts/study.py --quick")
    assert "| 3to2d at least as accurate as 3d at r=4 |" in md and "## Bars of the accuracy-cost study" in md
    cache = json.loads((tmp_path / "study_cpu_quick_cache.json").read_text())
    assert len(cache["variants"]) == len(STUDY_VARIANTS)
    # the learning curve: one point per validation (one, at the end, here), with the evaluator's R2
    for entry in cache["variants"].values():
        (point,) = entry["timing"]["curve"]
        own = str(entry["axes"]["ratio"])
        assert point["iteration"] == 2 and point["r2"] == pytest.approx(entry["eval"][own]["r2"], abs=1e-6)
        assert 0 < point["train_s"] <= entry["timing"]["train_s"] + 1e-6

    # the study ran the bundle, not a loop of its own: the bundle's outputs are in each variant's bundle root,
    # the reported R2 is its evaluator's, and the bundle's SupervisedTrainer made the configured number of steps
    for row in rows:
        root = Path(row["bundle_root"])
        assert (root / "models" / "checkpoint_final.pt").is_file() and (root / "models" / "model.pt").is_file()
        report = "eval" if row["eval_ratio"] == row["ratio"] else f"eval_r{row['eval_ratio']}"
        with open(root / report / "metrics_per_structure.csv") as f:
            macro = {r["structure"]: r for r in csv.DictReader(f)}["all"]
        assert float(row["r2"]) == pytest.approx(float(macro["val_r2"]), abs=1e-12)
        assert row["trainer"] == "SupervisedTrainer" and row["iterations"] == "2" and row["epochs"] == "1"
        for key in ("params_m", "gflop", "train_step_s", "infer_s", "cost_peak_mib", "step_s", "bundle_cpu_s"):
            assert float(row[key]) > 0, key
    logs = {Path(r["bundle_root"]) / "study_worker.log" for r in rows}
    stamps = {p: p.stat().st_mtime_ns for p in logs}

    again = _run("study.py", *args)  # everything comes from the cache: nothing is trained or evaluated
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": cached") == len(STUDY_VARIANTS)
    assert {p: p.stat().st_mtime_ns for p in logs} == stamps

    # report-only: the same rows from the cache; entries made with an earlier config text are used when their axes
    # match and are named; a variant without an entry is left out and named; nothing is trained
    cache_file = tmp_path / "study_cpu_quick_cache.json"
    (key, first), *_ = cache["variants"].items()
    aged = {**cache, "variants": {f"old-{k}": {**e, "fingerprint": "0123456789abcdef"} if k == key else e
                                  for k, e in cache["variants"].items()}}
    cache_file.write_text(json.dumps(aged))
    extra = "--add", 'not-run={"ratio": 2}'
    rebuilt = _run("study.py", *args, *extra, "--report-only")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "not in the cache, left out: not-run" in rebuilt.stderr
    again_rows = list(csv.DictReader((tmp_path / "study_cpu_quick.csv").open()))
    assert [(r["variant"], r["eval_ratio"], r["r2"]) for r in again_rows] == [
        (r["variant"], r["eval_ratio"], r["r2"]) for r in rows]
    md = (tmp_path / "study_cpu_quick.md").read_text()
    assert "without training (`--report-only`)" in md and "fingerprint `0123456789abcdef`" in md
    assert f"`0123456789abcdef`; the same network, data and settings by their recorded axes): {first['name']}." in md
    assert "so not in this report: not-run." in md
    assert {p: p.stat().st_mtime_ns for p in logs} == stamps
    # the cost columns measured again, one process per variant, nothing trained; the scores stay
    remeasured = _run("study.py", *args, "--remeasure-cost")
    assert remeasured.returncode == 0, remeasured.stderr
    cache = json.loads(cache_file.read_text())
    assert all(e.get("cost_measured") and e["cost"]["train_step_s"] > 0 for e in cache["variants"].values())
    assert [(r["variant"], r["r2"]) for r in csv.DictReader((tmp_path / "study_cpu_quick.csv").open())] == [
        (r["variant"], r["r2"]) for r in rows]
    assert "measured again by `--remeasure-cost`" in (tmp_path / "study_cpu_quick.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in logs} == stamps

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
    default_topology = net.topology
    other = "2d"
    args = ["--quick", "--device", "cpu", "--topologies", default_topology, other, "--precisions", "fp32",
            "--checkpoint", str(ckpt), "--out", str(out_dir)]
    out = _run("benchmark.py", *args)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((out_dir / "benchmark_cpu_quick.csv").open()))
    assert [(r["topology"], r["precision"]) for r in rows] == [(default_topology, "fp32"), (other, "fp32")]
    default = rows[0]
    for key in ("params_m", "gflop", "train_s", "infer_s", "patch_peak_mib", "volume_s", "volume_peak_mib",
                "train_gflops", "infer_gflops", "gemm_gflops"):
        assert float(default[key]) > 0, key
    # the achieved rates follow from the FLOP count and the times, as fractions of the same process's GEMM rate
    assert float(default["train_gflops"]) == pytest.approx(3 * float(default["gflop"]) / float(default["train_s"]))
    assert float(default["train_gemm_fraction"]) == pytest.approx(
        float(default["train_gflops"]) / float(default["gemm_gflops"]))
    assert rows[1]["volume_s"] == ""  # full volume for the default model only
    assert float(default["params_m"]) == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)
    assert float(default["bf16_max_abs_diff"]) >= float(default["bf16_mean_abs_diff"]) > 0
    assert math.isfinite(float(default["bf16_r2_change"]))
    md = (out_dir / "benchmark_cpu_quick.md").read_text()
    assert "Command: `python scripts/benchmark.py --quick" in md
    assert f"| {default_topology} (default) | fp32 |" in md and "R2 change" in md
    assert "fraction of the fp32 GEMM rate" in md and f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in md
    assert (out_dir / "benchmark_cpu_quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # results.md gathers both reports, marked preliminary
    study_md = out_dir / "study_cpu_quick.md"
    study_md.write_text("# Study (cpu)\n\nCommand: `python scripts/study.py --quick`\n")
    made = _run("make_results.py", "--docs", str(out_dir))
    assert made.returncode == 0, made.stderr
    results = (out_dir / "results.md").read_text()
    assert results.count("PRELIMINARY") == 2 and "### Benchmark (cpu)" in results
    assert results.index("Speed and memory") < results.index("Accuracy study")
    # the front (the default's basis) leads; the other study sets follow the claims of their device
    (out_dir / "study_front.md").write_text("# Accuracy-cost front\n\n![R2](study_front.png)\n")
    sets_md = "# Study (cpu)\n\nCommand: `python scripts/study.py --sweep loss data`\n"
    (out_dir / "study_loss+data_cpu.md").write_text(sets_md)
    made = _run("make_results.py", "--docs", str(out_dir))
    assert made.returncode == 0, made.stderr
    results = (out_dir / "results.md").read_text()
    front, claims = results.index("### Accuracy-cost front"), results.index("## Accuracy study, cpu")
    sets = results.index("## Study sets, cpu: loss+data")
    assert front < results.index("Speed and memory") < claims < sets and "--sweep loss data" in results[sets:]


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


def test_profile_training_quick_reports_stages_operators_and_the_gemm_fraction(tmp_path, monkeypatch):
    # as on an imitated AVX2-only CPU: the variable belongs to the report's command line
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    out = _run("profile_training.py", "--quick", "--iterations", "2", "--warmup", "1", "--threads", "1",
               "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (md,) = tmp_path.glob("profile_*_fp32.md")
    text = md.read_text()
    command = text.splitlines()[2]
    assert command.startswith("Command: `") and "ONEDNN_MAX_CPU_ISA=AVX2 " in command, command
    assert "python scripts/profile_training.py --quick" in command, command
    for stage in ("data", "forward", "loss", "backward", "optimizer", "handlers"):
        assert f"| {stage} |" in text
    # the operators come from the bundle's own SupervisedTrainer iterations: convolutions and Adam's step
    assert "convolution" in text and "Optimizer.step#Adam.step" in text
    assert "of this process's fp32 GEMM rate" in text and "minor page faults" in text
    # every convolution of the quick network timed alone, with its share of the GEMM rate
    conv_rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(conv_rows) >= 5 and any("| 3x3x3 |" in line for line in conv_rows), conv_rows
    assert "% of the GEMM rate**" in text
