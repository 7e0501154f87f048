"""
Assemble ``docs/results.md`` from the Markdown reports of ``scripts/benchmark.py`` and ``scripts/study.py``.

The accuracy-cost front (``study_front.md``, with its picture; it is what the bundle default is chosen on) comes
first. Then, for every device (cpu, cuda), the full report (``benchmark_<device>.md``, ``study_<device>.md``: the
paper's claims) is used when it exists, otherwise the ``..._quick.md`` one, which is marked preliminary; and the
reports of the other study sets (``study_<sets>_<device>.md``: front, loss, data). Each report keeps its command
and date.

    python scripts/make_results.py             # docs/*.md -> docs/results.md
    python scripts/make_results.py --docs DIR  # another folder
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from sparsessp_monai.io.publish import atomic_write_text  # noqa: E402

SECTIONS = (("benchmark", "Speed and memory"), ("study", "Accuracy study"))
DEVICES = ("cpu", "cuda")


def pick_reports(docs: Path) -> list[tuple[str, str, Path, bool]]:
    """``(kind, device, path, quick)`` of the report to include for each kind and device, full runs first."""
    found = []
    for kind, _ in SECTIONS:
        for device in DEVICES:
            full, quick = docs / f"{kind}_{device}.md", docs / f"{kind}_{device}_quick.md"
            if full.is_file():
                found.append((kind, device, full, False))
            elif quick.is_file():
                found.append((kind, device, quick, True))
    return found


def pick_set_reports(docs: Path, device: str) -> list[Path]:
    """The reports of the study sets other than the claims (``study_<sets>_<device>.md``), by name."""
    return sorted(p for p in docs.glob(f"study_*_{device}.md") if not p.name.endswith("_quick.md"))


def demote(markdown: str) -> str:
    """Push every heading two levels down so a report nests under a section of results.md."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.splitlines()) + "\n"


def build(docs: Path) -> str:
    """The text of results.md."""
    reports = pick_reports(docs)
    if not reports:
        raise ValueError(f"no benchmark_*.md or study_*.md report in {docs}: run scripts/benchmark.py first.")
    lines = [
        "# Results\n",
        f"Assembled by `python scripts/make_results.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        "from the reports in this folder; each report below starts with the command and date that produced it. "
        "Regenerate a report with its command, then rerun `python scripts/make_results.py`.\n",
    ]
    front = docs / "study_front.md"
    if front.is_file():
        lines.append("## Accuracy-cost front (the bundle default's basis)\n")
        lines.append(f"Source: `{front.name}`.\n")
        lines.append(demote(front.read_text(encoding="utf-8")))
    for kind, title in SECTIONS:
        for k, device, path, quick in reports:
            if k != kind:
                continue
            note = " — PRELIMINARY (quick mode, tiny shapes; numbers are not representative)" if quick else ""
            lines.append(f"## {title}, {device}{note}\n")
            lines.append(f"Source: `{path.name}`.\n")
            lines.append(demote(path.read_text(encoding="utf-8")))
            if kind == "study":
                for extra in pick_set_reports(docs, device):
                    lines.append(f"## Study sets, {device}: {extra.stem[len('study_'):-len(device) - 1]}\n")
                    lines.append(f"Source: `{extra.name}`.\n")
                    lines.append(demote(extra.read_text(encoding="utf-8")))
    # hand-run checks on a lent GPU machine (CI has none), kept as their own report
    gpu = docs / "gpu_check.md"
    if gpu.is_file():
        lines.append("## GPU check\n")
        lines.append(f"Source: `{gpu.name}`.\n")
        lines.append(demote(gpu.read_text(encoding="utf-8")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write ``<docs>/results.md``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    try:
        text = build(Path(args.docs))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = atomic_write_text(Path(args.docs) / "results.md", text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
