"""
Train every SparseSSP variant with the same data, seed and budget, evaluate at r = 1, 2, 4, 8, and check the
paper's claims (library: :mod:`sparsessp_monai.experiments.study`, claims and report in
:mod:`sparsessp_monai.experiments.claims`).

Writes ``<out>/study_<device>.csv`` and ``.md`` (command and date at the top). Results of finished variants are
cached in ``<out>/study_<device>_cache.json``: a killed run continues where it stopped (``--fresh`` ignores it).

    python scripts/study.py                      # CPU default: 19 variants x 900 steps, about 31 min on 2 cores
    python scripts/study.py --full --device cuda # GPU-sized: 32x128x128 patches, more data and steps
    python scripts/study.py --quick --out /tmp/s # seconds, for tests
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from sparsessp_monai.engines.bundle_utils import fast_bf16  # noqa: E402
from sparsessp_monai.experiments import benchmarking as bm  # noqa: E402
from sparsessp_monai.experiments import claims, study  # noqa: E402
from sparsessp_monai.io.publish import atomic_write_text  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny shapes and 2 steps (tests)")
    size.add_argument("--full", action="store_true", help="GPU-sized settings")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--steps", type=int, help="training steps per variant")
    p.add_argument("--seed", type=int)
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                   help="bf16 autocast in training (auto: where the device has native bf16); evaluation is fp32")
    p.add_argument("--generalisation", help="topologies also evaluated at the other ratios: all, none or one")
    p.add_argument("--only", nargs="+", default=None, metavar="SUBSTRING",
                   help="run only variants whose name contains one of these strings")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--little-drop", type=float, default=0.05, help="max R2 drop r=1 -> r=4 that counts as little")
    p.add_argument("--degrade-drop", type=float, default=0.02, help="min R2 drop r=4 -> r=8 that counts as degrading")
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--fresh", action="store_true", help="ignore the cache of finished variants")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the study and write its CSV and Markdown."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        device = bm.resolve_device(args.device)
        settings = study.StudySettings.quick() if args.quick else (
            study.StudySettings.full() if args.full else study.StudySettings())
        bf16 = {"on": True, "off": False, "auto": fast_bf16(device)}[args.bf16]
        settings = study.replace_settings(settings, steps=args.steps, seed=args.seed, bf16=bf16,
                                          generalisation=args.generalisation)
        settings.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = study.default_variants(settings.ratios, settings.ablation_ratio)
    if args.only:
        variants = [v for v in variants if any(s in v.name for s in args.only)]
        if not variants:
            print(f"error: no variant matches {args.only}", file=sys.stderr)
            return 2

    out = Path(args.out)
    stem = f"study_{device.type}{'_quick' if args.quick else ''}"
    cache_path = out / f"{stem}_cache.json"
    cache: dict = {}
    if cache_path.is_file() and not args.fresh:
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8"))
        except ValueError:
            print(f"warning: unreadable cache {cache_path}, starting afresh", file=sys.stderr)

    def save(c: dict) -> None:
        atomic_write_text(cache_path, json.dumps(c, indent=1))

    t0 = time.perf_counter()
    try:
        rows = study.run_study(settings, variants, device, cache, save, log=lambda m: print(m, flush=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verdicts = claims.check_claims(rows, settings.ratios, settings.ablation_ratio, args.little_drop, args.degrade_drop)
    command = "python scripts/study.py " + " ".join(shlex.quote(a) for a in argv)
    md = claims.render_markdown(rows, verdicts, settings, command.strip(), device.type, args.quick,
                                time.perf_counter() - t0)
    bm.write_csv(out / f"{stem}.csv", rows)
    atomic_write_text(out / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
