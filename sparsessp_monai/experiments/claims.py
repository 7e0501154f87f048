"""
The paper's claims checked against the results of :func:`sparsessp_monai.experiments.study.run_study`, and the
Markdown report of a study (``scripts/study.py``).

Each claim is marked confirmed, refuted or "not evaluated" (a variant it needs is missing or NaN) with its margin
in macro R2 (higher is better), read at each variant's own training ratio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sparsessp_monai.experiments.benchmarking import markdown_table
from sparsessp_monai.experiments.study import StudySettings

__all__ = ["Claim", "check_claims", "render_markdown"]


@dataclass
class Claim:
    """A claim of the paper with the verdict of this study."""

    claim: str
    verdict: str  # "confirmed", "refuted" or "not evaluated"
    margin: str
    details: list[str] = field(default_factory=list)


def _lookup(results: list[dict[str, Any]], metric: str = "r2") -> dict[tuple, float]:
    """``(topology, ratio, z_mapping, prefix_mode, embedding) -> metric`` at each variant's own training ratio."""
    table = {}
    for r in results:
        if int(r["eval_ratio"]) == int(r["ratio"]):
            key = (r["topology"], int(r["ratio"]), r["z_mapping"], r["prefix_mode"], r["embedding"])
            table[key] = float(r[metric])
    return table


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


def render_markdown(
    rows: list[dict[str, Any]], claims: list[Claim], settings: StudySettings, command: str, device: str,
    quick: bool = False, elapsed_s: float | None = None,
) -> str:
    """The study report: command and date, settings, results at the training ratio, generalisation, claims."""
    title = f"# Study ({device}){' — quick mode, preliminary, not representative' if quick else ''}\n"
    s = settings
    lines = [
        title,
        f"Command: `{command}`\n",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        + (f"; {elapsed_s / 60:.1f} min for the variants run now (cached ones excluded)." if elapsed_s else ".")
        + f" torch {torch.__version__}, {torch.get_num_threads()} threads.\n",
        f"Settings: synthetic cells {'x'.join(map(str, s.shape))}, {s.train_per_structure} training + "
        f"{s.val_per_structure} validation volumes per structure ({', '.join(s.structures)}); patch "
        f"{'x'.join(map(str, s.patch))}, batch {s.batch_size}, {s.steps} Adam steps (lr {s.learning_rate}, cosine), "
        f"seed {s.seed}, {'bf16 autocast' if s.bf16 else 'fp32'} training; fp32 Gaussian sliding-window evaluation "
        f"(overlap {s.overlap}); metrics per image, mean per structure, macro mean over structures. Features 3D "
        f"{list(s.features_3d)}, 2D {list(s.features_2d)}.\n",
        "## Results at each model's training ratio\n",
    ]
    own = [r for r in rows if r["eval_ratio"] == r["ratio"]]
    body = [[r["variant"], r["topology"], r["ratio"], "suffix" if r["z_mapping"] == "suffix" else r["prefix_mode"],
             r["embedding"], f"{r['mse']:.4f}", f"{r['mae']:.4f}", f"{r['r2']:.4f}", f"{r['pearson']:.4f}",
             f"{r['step_s']:.2f}"] for r in own]
    lines.append(markdown_table(
        ["variant", "topology", "r", "z-mapping", "embedding", "MSE", "MAE", "R2", "Pearson", "s/step"], body,
        "lllll" + "r" * 5,
    ))
    gen = [r for r in rows if r["eval_ratio"] != r["ratio"]]
    if gen:
        lines.append("## Ratio generalisation (model trained at r, evaluated at r')\n")
        lines.append(markdown_table(
            ["variant", "trained r", "eval r'", "MSE", "R2", "Pearson"],
            [[r["variant"], r["ratio"], r["eval_ratio"], f"{r['mse']:.4f}", f"{r['r2']:.4f}", f"{r['pearson']:.4f}"]
             for r in gen],
            "lrrrrr",
        ))
    lines.append("## Claims of the paper (macro R2)\n")
    lines.append(markdown_table(["claim", "verdict", "margin"], [[c.claim, c.verdict, c.margin] for c in claims],
                                "lll"))
    for c in claims:
        lines += [f"- {c.claim}: {d}" for d in c.details]
    return "\n".join(lines) + "\n"
