"""
The accuracy-cost picture of a study: macro R2 against the fp32 train-step time of every point, one panel per
ratio, with the Pareto front (no other point is both faster and more accurate) drawn and the default circled;
and the table behind it (``scripts/study.py --front``; ``docs/study_front.png`` and ``docs/study_front.md``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparsessp_monai.experiments.benchmarking import markdown_table
from sparsessp_monai.experiments.claims import format_cell
from sparsessp_monai.io.publish import atomic_write, atomic_write_text

__all__ = ["FRONT_GROUPS", "front_markdown", "front_png", "front_points", "pareto_front", "write_front"]

FRONT_GROUPS = ("front", "loss", "claims")
"""Groups whose points go on the picture (the data-size points train on other data, so they stay off it)."""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """
    Indices of the Pareto-optimal ``(cost, score)`` points (lower cost and higher score are better), by increasing
    cost: a point is on the front when no other point has a lower or equal cost and a higher or equal score, one of
    them strictly. Points with a NaN value are never on it.
    """
    finite = [i for i, (c, s) in enumerate(points) if not (math.isnan(c) or math.isnan(s))]
    order = sorted(finite, key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def front_points(rows: Sequence[dict[str, Any]], groups: Sequence[str] = FRONT_GROUPS) -> dict[int, list[dict]]:
    """Rows at their own training ratio from ``groups`` (one per variant name), by ratio."""
    by_ratio: dict[int, list[dict]] = {}
    seen = set()
    for r in rows:
        if int(r["eval_ratio"]) != int(r["ratio"]) or r.get("group", "front") not in groups or r["variant"] in seen:
            continue
        seen.add(r["variant"])
        by_ratio.setdefault(int(r["ratio"]), []).append(r)
    return dict(sorted(by_ratio.items()))


def _is_default(row: dict) -> bool:
    return str(row.get("default", False)).lower() in ("true", "1")


def front_png(path: str | os.PathLike, rows: Sequence[dict[str, Any]], title: str = "",
              groups: Sequence[str] = FRONT_GROUPS) -> Path:
    """
    Write the picture (matplotlib, atomically): one panel per ratio, x = fp32 train-step time (s, log scale),
    y = macro R2; each point labelled with its variant name, the Pareto front as a step line, the default circled.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    panels = front_points(rows, groups)
    if not panels:
        raise ValueError("no result rows to draw.")
    fig = Figure(figsize=(7.5 * len(panels), 6.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = {"3to2d": "tab:blue", "3d": "tab:red", "2d": "tab:green", "2to3d": "tab:purple"}
    for ax, (ratio, points) in zip(axes, panels.items()):
        xy = [(float(p["train_step_s"]), float(p["r2"])) for p in points]
        for p, (x, y) in zip(points, xy):
            marker = "s" if "L1" in str(p.get("loss", "")) else "o"
            ax.scatter([x], [y], color=colours.get(p["topology"], "tab:gray"), marker=marker, s=36, zorder=3)
            label = p["variant"].replace(f"-r{ratio}", "")  # the panel names the ratio
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
            if _is_default(p):
                ax.scatter([x], [y], s=260, facecolors="none", edgecolors="black", linewidths=1.6, zorder=4,
                           label="default")
        front = [xy[i] for i in pareto_front(xy)]
        if front:
            ax.step([x for x, _ in front], [y for _, y in front], where="post", color="black", alpha=0.5,
                    linestyle="--", label="Pareto front", zorder=2)
        for topology, colour in colours.items():
            if any(p["topology"] == topology for p in points):
                ax.scatter([], [], color=colour, label=topology)
        if any("L1" in str(p.get("loss", "")) for p in points):
            ax.scatter([], [], color="gray", marker="s", label="L1 loss")
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("fp32 train step (s, one training batch)")
        ax.set_ylabel("macro R2 (validation)")
        ax.set_title(f"r = {ratio}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        # a command line may hold "$" (regular expressions): plain text, not matplotlib mathtext
        fig.suptitle(title.replace("$", r"\$"), fontsize=10)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _embedding_cell(point: dict) -> str:
    """The embedding, with the bridge kernel where it is not 1 x 1 (``2d 5x5``)."""
    k = int(point.get("bridge_kernel") or 1)
    return point["embedding"] + (f" {k}x{k}" if k != 1 else "")


def front_markdown(rows: Sequence[dict[str, Any]], command: str, png_name: str = "study_front.png",
                   groups: Sequence[str] = FRONT_GROUPS, notes: str = "") -> str:
    """The table behind the picture, per ratio, with the command and date; ``front`` marks the Pareto points;
    ``notes`` (Markdown) go at the end."""
    lines = [
        "# Accuracy-cost front\n",
        f"Command: `{command}`\n",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n",
        f"![R2 against fp32 train-step time]({png_name})\n",
        "Every point is the shipped bundle trained with its overrides (same data, seed and number of steps); R2 is "
        "the validation macro R2; the fp32 train step is one Adam step on one training batch of the pipeline.\n",
    ]
    for ratio, points in front_points(rows, groups).items():
        on_front = set(pareto_front([(float(p["train_step_s"]), float(p["r2"])) for p in points]))
        body = [
            [p["variant"] + (" (default)" if _is_default(p) else ""), p["topology"], format_cell(p["features_3d"]),
             "" if p["topology"] == "3d" else format_cell(p["features_2d"]), _embedding_cell(p), p["loss"],
             *(format_cell(float(p[k])) for k in ("r2", "pearson", "mae")), format_cell(float(p["params_m"]), 3),
             format_cell(float(p["gflop"]), 2), format_cell(float(p["train_step_s"]), 3),
             format_cell(float(p["infer_s"])), format_cell(float(p["train_peak_mib"]), 0),
             "yes" if i in on_front else ""]
            for i, p in enumerate(points)
        ]
        lines.append(f"## r = {ratio}\n")
        lines.append(markdown_table(
            ["variant", "topology", "3D widths", "2D widths", "emb", "loss", "R2", "Pearson", "MAE", "M params",
             "GFLOP/patch", "fp32 step s", "infer s/patch", "peak MiB", "front"],
            body, "l" * 6 + "r" * 8 + "l",
        ))
    if notes:
        lines.append(notes)
    return "\n".join(lines)


def write_front(rows: Sequence[dict[str, Any]], out: str | os.PathLike, command: str,
                stem: str = "study_front", notes: str = "") -> tuple[Path, Path]:
    """Write ``<out>/<stem>.png`` and ``<out>/<stem>.md`` (atomically); returns both paths."""
    out = Path(out)
    png = front_png(out / f"{stem}.png", rows, title=command)
    md = atomic_write_text(out / f"{stem}.md", front_markdown(rows, command, png.name, notes=notes))
    return png, md
