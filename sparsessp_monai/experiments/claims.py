"""
The paper's claims and the bars of the accuracy-cost study checked against the results of
:func:`sparsessp_monai.experiments.study.run_study`, and the Markdown report of a study (``scripts/study.py``).

Each claim is marked confirmed, refuted or "not evaluated" (a variant it needs is missing or NaN) with its margin
in macro R2 (higher is better), read at each variant's own training ratio. Only baseline rows count (rows whose
variant differs from the config along the claims' axes alone: topology, ratio, z-mapping, prefix mode, embedding),
so a wider network or another loss in the same results never stands in for the default.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsessp_monai.experiments.benchmarking import markdown_table
from sparsessp_monai.experiments.study import StudySettings, settings_record

__all__ = ["Claim", "check_bars", "check_claims", "format_cell", "render_markdown"]


@dataclass
class Claim:
    """A claim of the paper with the verdict of this study."""

    claim: str
    verdict: str  # "confirmed", "refuted" or "not evaluated"
    margin: str
    details: list[str] = field(default_factory=list)


def _lookup(results: list[dict[str, Any]], metric: str = "r2") -> dict[tuple, float]:
    """``(topology, ratio, z_mapping, prefix_mode, embedding) -> metric`` of the baseline rows at their own ratio."""
    table = {}
    for r in results:
        if int(r["eval_ratio"]) == int(r["ratio"]) and _is_true(r.get("baseline", True)):
            key = (r["topology"], int(r["ratio"]), r["z_mapping"], r["prefix_mode"], r["embedding"])
            table[key] = float(r[metric])
    return table


def _is_true(value: Any) -> bool:
    """A flag from a row, also when read back from CSV (``"True"``/``"False"``)."""
    return value is True or str(value).lower() in ("true", "1")


def check_claims(
    results: list[dict[str, Any]],
    ratios: Sequence[int] = (1, 2, 4, 8),
    ablation_ratio: int = 4,
    little_drop: float = 0.05,
    degrade_drop: float = 0.02,
) -> list[Claim]:
    """
    Mark each claim of the paper confirmed or refuted from result rows (one per variant and evaluation ratio, with
    ``topology, ratio, z_mapping, prefix_mode, embedding, eval_ratio, r2``). Margins are in macro R2 (higher is
    better); a claim with a missing variant is "not evaluated".

    Criteria:

    1. 3to2d beats 3d at every r: R2(3to2d) - R2(3d) > 0 at every ratio; the margin is the smallest difference.
    2. 3to2d is at least as accurate as 3d at r = ``ablation_ratio``: difference >= 0.
    3. prefix beats suffix: both prefix modes (nearest, trilinear) have a higher R2 than the suffix z-mapping.
    4. 3D embedding beats 2D embedding (3to2d): R2(3d emb) - R2(2d emb) > 0.
    5. r = 4 costs little: R2(3to2d, r=1) - R2(3to2d, r=4) <= ``little_drop``.
    6. r = 8 degrades: R2(3to2d, r=4) - R2(3to2d, r=8) >= ``degrade_drop`` (clearly worse than r = 4).
    """
    t = _lookup(results)

    def get(topology: str, r: int, z: str = "prefix", mode: str = "trilinear", emb: str = "3d") -> float | None:
        value = t.get((topology, int(r), z, mode, emb))
        return None if value is None or math.isnan(value) else value

    def verdict(ok: bool) -> str:
        return "confirmed" if ok else "refuted"

    claims = []
    diffs = {r: (get("3to2d", r), get("3d", r)) for r in ratios}
    if all(a is not None and b is not None for a, b in diffs.values()) and diffs:
        margins = {r: a - b for r, (a, b) in diffs.items()}
        worst = min(margins, key=margins.get)
        claims.append(Claim(
            "3to2d beats 3d at every r", verdict(all(m > 0 for m in margins.values())),
            f"min R2 difference {margins[worst]:+.4f} (r={worst})",
            [f"r={r}: R2 3to2d {diffs[r][0]:.4f} vs 3d {diffs[r][1]:.4f} ({m:+.4f})" for r, m in margins.items()],
        ))
    else:
        claims.append(Claim("3to2d beats 3d at every r", "not evaluated", "missing variants"))

    a, b = get("3to2d", ablation_ratio), get("3d", ablation_ratio)
    name = f"3to2d at least as accurate as 3d at r={ablation_ratio}"
    if a is not None and b is not None:
        claims.append(Claim(name, verdict(a - b >= 0), f"R2 {a:.4f} vs {b:.4f} ({a - b:+.4f})"))
    else:
        claims.append(Claim(name, "not evaluated", "missing variants"))

    tri, near = get("3to2d", ablation_ratio), get("3to2d", ablation_ratio, mode="nearest")
    suf = get("3to2d", ablation_ratio, z="suffix", mode="trilinear")
    if suf is None:  # the suffix variant's prefix_mode field is irrelevant; accept any
        suf = next((v for k, v in t.items() if k[:3] == ("3to2d", ablation_ratio, "suffix")), None)
    name = f"prefix beats suffix (3to2d, r={ablation_ratio})"
    if tri is not None and near is not None and suf is not None:
        m = min(tri, near) - suf
        claims.append(Claim(
            name, verdict(m > 0), f"min(prefix) - suffix = {m:+.4f}",
            [f"prefix trilinear {tri:.4f}, prefix nearest {near:.4f}, suffix {suf:.4f}; "
             f"trilinear - nearest {tri - near:+.4f}"],
        ))
    else:
        claims.append(Claim(name, "not evaluated", "missing variants"))

    e3, e2 = get("3to2d", ablation_ratio), get("3to2d", ablation_ratio, emb="2d")
    name = f"3D embedding beats 2D embedding (3to2d, r={ablation_ratio})"
    if e3 is not None and e2 is not None:
        claims.append(Claim(name, verdict(e3 - e2 > 0), f"R2 {e3:.4f} vs {e2:.4f} ({e3 - e2:+.4f})"))
    else:
        claims.append(Claim(name, "not evaluated", "missing variants"))

    r1, r4, r8 = get("3to2d", 1), get("3to2d", 4), get("3to2d", 8)
    name = f"r=4 costs little (3to2d: R2 drop vs r=1 <= {little_drop})"
    if r1 is not None and r4 is not None:
        claims.append(Claim(name, verdict(r1 - r4 <= little_drop), f"drop {r1 - r4:+.4f} (R2 {r1:.4f} -> {r4:.4f})"))
    else:
        claims.append(Claim(name, "not evaluated", "missing variants"))
    name = f"r=8 degrades (3to2d: R2 drop vs r=4 >= {degrade_drop})"
    if r4 is not None and r8 is not None:
        claims.append(Claim(name, verdict(r4 - r8 >= degrade_drop), f"drop {r4 - r8:+.4f} (R2 {r4:.4f} -> {r8:.4f})"))
    else:
        claims.append(Claim(name, "not evaluated", "missing variants"))
    return claims


def check_bars(
    results: list[dict[str, Any]], ratios: Sequence[int] = (4, 8), max_time_ratio: float = 0.5
) -> list[Claim]:
    """
    The bar of the accuracy-cost study at each ratio: the method's network (the ``3to2d`` row with the config's
    own widths: the ``default`` row when the default is 3to2d, else the baseline 3to2d row with the default's
    ``features_3d``) reaches at least the macro R2 of the 3d network with the same encoder widths (a baseline
    ``3d`` row with equal ``features_3d``), while its fp32 train step (``train_step_s``) takes at most
    ``max_time_ratio`` of the 3d one. Rows need ``default, baseline, topology, ratio, eval_ratio, features_3d, r2,
    train_step_s``.
    """
    own = [r for r in results if int(r["eval_ratio"]) == int(r["ratio"])]
    bars = []
    for ratio in ratios:
        name = f"3to2d >= 3d (same encoder) in R2 at r={ratio}, fp32 train step <= {max_time_ratio:g}x"
        at = [r for r in own if int(r["ratio"]) == ratio]
        default = next((r for r in at if _is_true(r.get("default"))), None)
        method = default
        if default is not None and default["topology"] != "3to2d":
            method = next((r for r in at if r["topology"] == "3to2d" and _is_true(r.get("baseline", True))
                           and str(r.get("features_3d")) == str(default.get("features_3d"))), None)
        rival = None if method is None else next(
            (r for r in at if r["topology"] == "3d" and _is_true(r.get("baseline", True))
             and str(r.get("features_3d")) == str(method.get("features_3d"))), None)
        values = None if rival is None else [float(x[k]) for x in (method, rival) for k in ("r2", "train_step_s")]
        if values is None or any(math.isnan(v) for v in values):
            bars.append(Claim(name, "not evaluated", "missing variants"))
            continue
        r2_d, t_d, r2_3d, t_3d = values
        ok = r2_d - r2_3d >= 0 and t_d <= max_time_ratio * t_3d
        bars.append(Claim(
            name, "confirmed" if ok else "refuted",
            f"R2 {r2_d:.4f} vs {r2_3d:.4f} ({r2_d - r2_3d:+.4f}); step {t_d:.3f} s vs {t_3d:.3f} s "
            f"({t_d / t_3d:.2f}x)",
        ))
    return bars


def format_cell(value: Any, digits: int = 4) -> str:
    """A table cell: numbers rounded, missing values empty."""
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    return str(value)


def time_to_r2(curve: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds (validations excluded) at the first validation whose R2 reaches ``target``; ``None`` if none."""
    return next((float(p["train_s"]) for p in curve if float(p["r2"]) >= target), None)


def curve_section(rows: list[dict[str, Any]], target: float) -> list[str]:
    """Markdown lines of the learning curves (variants validated more than once): R2 at every validation."""
    own = [r for r in rows if r["eval_ratio"] == r["ratio"] and len(r.get("curve") or []) > 1]
    if not own:
        return []
    lines = [f"## Learning curves (time to R2 >= {target})\n",
             "R2 after each validation at the training time it was reached (seconds of training, validations "
             "excluded, this machine and threads).\n"]
    body = []
    for r in own:
        reached = time_to_r2(r["curve"], target)
        points = ", ".join(f"{p['r2']:.3f} @ {p['train_s']:.0f} s (ep {p['epoch']})" for p in r["curve"])
        body.append([r["variant"], "not reached" if reached is None else f"{reached:.0f}", points])
    lines.append(markdown_table(["variant", f"s to R2 {target}", "R2 @ training s"], body, "lrl"))
    return lines


def render_markdown(
    rows: list[dict[str, Any]], claims: list[Claim], settings: StudySettings, command: str, device: str,
    quick: bool = False, elapsed_s: float | None = None, bars: list[Claim] | None = None, target_r2: float = 0.57,
) -> str:
    """The study report: command and date, settings, results at the training ratio, generalisation, claims, bars."""
    title = f"# Study ({device}){' — quick mode, preliminary, not representative' if quick else ''}\n"
    shared = settings_record(settings)
    lines = [
        title,
        f"Command: `{command}`\n",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        + (f"; {elapsed_s / 60:.1f} min for the variants run now (cached ones excluded)." if elapsed_s else ".")
        + f" torch {torch.__version__}, {shared['threads'] or torch.get_num_threads()} threads.\n",
        f"Every variant is `python -m monai.bundle run training --config_file {Path(settings.config_file).name}` "
        "(through `monai.bundle.ConfigWorkflow`, one fresh process each) with its overrides and these shared ones: "
        f"`{json.dumps(settings.overrides())}`. Scores are the `all` row (mean per structure, then over structures) of "
        "the `metrics_per_structure.csv` the bundle's evaluator writes after the last epoch (Gaussian sliding "
        "windows); other evaluation ratios use `evaluate.json` merged on it with `ratio` overridden. Cost columns: "
        "the variant's `network_def` on one training batch (fp32 Adam step, inference per patch, GFLOP per patch); "
        "s/step (run): the trainer's mean iteration time in the run itself.\n",
        "## Results at each model's training ratio\n",
    ]
    own = [r for r in rows if r["eval_ratio"] == r["ratio"]]
    cols = ["variant", "topology", "r", "z-mapping", "emb", "3D widths", "2D widths", "loss", "n/structure", "MSE",
            "MAE", "R2", "Pearson", "M params", "GFLOP", "fp32 step s", "infer s", "peak MiB", "s/step (run)"]
    f = format_cell
    body = [[r["variant"], r["topology"], r["ratio"], "suffix" if r["z_mapping"] == "suffix" else r["prefix_mode"],
             r["embedding"], f(r["features_3d"]), f(r["features_2d"]) if r["topology"] != "3d" else "", r["loss"],
             r["num_per_structure"], f(r["mse"]), f(r["mae"]), f(r["r2"]), f(r["pearson"]), f(r["params_m"], 3),
             f(r["gflop"], 2), f(r["train_step_s"], 3), f(r["infer_s"], 4), f(r["train_peak_mib"], 0),
             f(r["step_s"], 3)] for r in own]
    lines.append(markdown_table(cols, body, "l" * 9 + "r" * 10))
    gen = [r for r in rows if r["eval_ratio"] != r["ratio"]]
    if gen:
        lines.append("## Ratio generalisation (model trained at r, evaluated at r')\n")
        lines.append(markdown_table(
            ["variant", "trained r", "eval r'", "MSE", "R2", "Pearson"],
            [[r["variant"], r["ratio"], r["eval_ratio"], f(r["mse"]), f(r["r2"]), f(r["pearson"])] for r in gen],
            "lrrrrr",
        ))
    lines.append("## Claims of the paper (macro R2)\n")
    lines.append(markdown_table(["claim", "verdict", "margin"], [[c.claim, c.verdict, c.margin] for c in claims],
                                "lll"))
    for c in claims:
        lines += [f"- {c.claim}: {d}" for d in c.details]
    if bars:
        lines.append("\n## Bars of the accuracy-cost study\n")
        lines.append(markdown_table(["bar", "verdict", "margin"], [[c.claim, c.verdict, c.margin] for c in bars],
                                    "lll"))
    lines += curve_section(rows, target_r2)
    return "\n".join(lines) + "\n"
