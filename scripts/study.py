"""
Train SparseSSP variants through the shipped bundle (``bundle/configs/train.json`` with overrides, one fresh
process each), with the same data, seed and number of steps, and report accuracy and cost (library:
:mod:`sparsessp_monai.experiments.study`, variant sets in :mod:`sparsessp_monai.experiments.sweeps`, claims and
report in :mod:`sparsessp_monai.experiments.claims`, picture in :mod:`sparsessp_monai.experiments.front`).

Variant sets (``--sweep``): ``claims`` (the paper's comparison, every topology at r = 1, 2, 4, 8 and the
ablations), ``front`` (3to2d decoder widths, embedding and encoder widths; 3d widths; at r = 4 and 8), ``loss``
(L1 against MSE for two points), ``data`` (4, 16, 64 volumes per structure, same steps), ``all``.

Writes ``<out>/study_<device>.csv`` and ``.md`` for the claims set (``study_<sets>_<device>.*`` for other sets),
and ``<out>/study_front.png`` and ``.md`` when front points are among the results. Finished variants are cached in
``<out>/study_<device>_cache.json`` (keyed by their overrides and the settings): a killed run continues where it
stopped (``--fresh`` ignores the cache). Bundle roots of the variants go under ``--work``.

    python scripts/study.py                                   # the claims, CPU, 12 epochs x 36 steps per variant
    python scripts/study.py --sweep front loss data --threads 2
    python scripts/study.py --sweep front --dry-run           # the variants and their overrides
    python scripts/study.py --sweep all --device cuda
    python scripts/study.py --quick --out /tmp/s              # seconds per variant, for tests
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from sparsessp_monai.engines.bundle_utils import fast_bf16  # noqa: E402
from sparsessp_monai.experiments import benchmarking as bm  # noqa: E402
from sparsessp_monai.experiments import claims, front, study, sweeps  # noqa: E402
from sparsessp_monai.io.publish import atomic_write_text  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny demo data, 1 epoch of 2 steps (tests)")
    p.add_argument("--sweep", nargs="+", default=["claims"], choices=[*sweeps.SWEEPS, "all"])
    p.add_argument("--ratios", type=int, nargs="+", help="ratios of the sets (claims: 1 2 4 8, others: 4 8)")
    p.add_argument("--loss-points", nargs="+", metavar="NAME",
                   help="front variants (without -r<ratio>) trained with L1 by the loss set, e.g. 3to2d-c4-e16")
    p.add_argument("--add", action="append", default=[], metavar="NAME=JSON",
                   help="one more variant: a name and a JSON object of overrides of train.json")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--epochs", type=int, help="training budget: epochs per variant (default 12; quick 1)")
    p.add_argument("--steps-per-epoch", type=int, help="optimiser steps per epoch (default 36; quick 2)")
    p.add_argument("--seed", type=int)
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                   help="bf16 autocast in training and validation (auto: where the device has native bf16)")
    p.add_argument("--generalisation", default="3to2d", help="claims: topologies also evaluated at the other ratios")
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON", help="override for every variant")
    p.add_argument("--target-r2", type=float, default=0.57,
                   help="R2 whose time to reach the report gives for variants validated more than once "
                        "(--override val_interval=N)")
    p.add_argument("--only", nargs="+", default=None, metavar="REGEX",
                   help="run only variants whose name matches one of these regular expressions (re.search)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of each variant's process")
    p.add_argument("--little-drop", type=float, default=0.05, help="max R2 drop r=1 -> r=4 that counts as little")
    p.add_argument("--degrade-drop", type=float, default=0.02, help="min R2 drop r=4 -> r=8 that counts as degrading")
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--work", help="folder of the variants' bundle roots (default: runs/<report stem>)")
    p.add_argument("--fresh", action="store_true", help="ignore the cache of finished variants")
    p.add_argument("--remeasure-cost", action="store_true",
                   help="measure the cost columns of the cached variants again, one process after another (run it on "
                        "a quiet machine), then rebuild the reports as --report-only does")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild the reports from the cache (variants not in it are left out; points "
                        "made with an earlier text of the configs but the same network and settings are used and "
                        "named in the report)")
    p.add_argument("--dry-run", action="store_true", help="print the variants and their overrides, run nothing")
    return p.parse_args(argv)


def _pairs(items: list[str], flag: str) -> dict[str, object]:
    """``KEY=JSON`` strings as a dict (a value that is not JSON stays a string)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} must be KEY=JSON, got {item!r}.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def make_settings(args: argparse.Namespace) -> study.StudySettings:
    """The shared settings of the command line."""
    device = bm.resolve_device(args.device)
    settings = study.StudySettings.quick() if args.quick else study.StudySettings()
    bf16 = {"on": True, "off": False, "auto": fast_bf16(device)}[args.bf16]
    settings = study.replace_settings(settings, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                      seed=args.seed, bf16=bf16, device=device.type, threads=args.threads,
                                      extra=_pairs(args.override, "--override") or None)
    settings.validate()
    return settings


def make_variants(args: argparse.Namespace, settings: study.StudySettings) -> list[study.Variant]:
    """The variants of ``--sweep`` filtered by ``--only``, then those of ``--add``."""
    variants = sweeps.sweep_variants(args.sweep, settings.config_file, args.ratios, args.loss_points,
                                     args.generalisation)
    if args.only:
        variants = [v for v in variants if any(re.search(s, v.name) for s in args.only)]
        if not variants and not args.add:
            raise ValueError(f"no variant matches {args.only}")
    for name, overrides in _pairs(args.add, "--add").items():
        if not isinstance(overrides, dict):
            raise ValueError(f"--add {name}: the overrides must be a JSON object.")
        variants.append(study.Variant(name, overrides, "added", baseline=False))
    return variants


def report_only_notes(missing: list[str], earlier: dict[str, str], cache_name: str) -> str:
    """What a report rebuilt from the cache says about its points (Markdown)."""
    lines = [f"Rebuilt from `{cache_name}` without training (`--report-only`)."]
    if earlier:
        by_print: dict[str, list[str]] = {}
        for name, print_ in earlier.items():
            by_print.setdefault(print_, []).append(name)
        for print_, names in by_print.items():
            lines.append(f"Trained with an earlier text of the configs (fingerprint `{print_}`; the same network, "
                         f"data and settings by their recorded axes): {', '.join(names)}.")
    if missing:
        lines.append(f"Not in the cache, so not in this report: {', '.join(missing)}.")
    return "\n\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the study and write its reports."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        settings = make_settings(args)
        variants = make_variants(args, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"shared overrides: {json.dumps(settings.overrides())}")
        for v in variants:
            evals = f" (also evaluated at r={list(v.eval_ratios)})" if v.eval_ratios else ""
            print(f"{v.name} [{v.group}]{evals}: {json.dumps(v.overrides)}")
        print(f"{len(variants)} variants, {settings.epochs} epochs x {settings.steps_per_epoch} steps each")
        return 0

    out = Path(args.out)
    device = f"{settings.device}{'_quick' if args.quick else ''}"
    sets = "" if args.sweep == ["claims"] else "_" + "+".join(args.sweep)
    stem = f"study{sets}_{device}"
    cache_path = out / f"study_{device}_cache.json"  # one cache per device for every set: keys are the overrides
    cache: dict = {}
    if cache_path.is_file() and not args.fresh:
        try:
            cache = json.loads(cache_path.read_text(encoding="utf-8"))
        except ValueError:
            print(f"warning: unreadable cache {cache_path}, starting afresh", file=sys.stderr)

    def save(c: dict) -> None:
        atomic_write_text(cache_path, json.dumps(c, indent=1))

    work = Path(args.work) if args.work else ROOT / "runs" / f"study_{device}"
    t0 = time.perf_counter()
    notes = ""
    if args.report_only or args.remeasure_cost:
        # one lookup: remeasure_costs updates the found entries in place, the rows are read from them after
        found, missing, earlier = study.cached_entries(settings, variants, cache)
        if args.remeasure_cost:
            study.remeasure_costs(settings, found, work, lambda: save(cache), log=lambda m: print(m, flush=True))
        rows = study.entry_rows(found)
        failed = []
        if missing:
            print(f"not in the cache, left out: {', '.join(missing)}", file=sys.stderr)
        notes = report_only_notes(missing, earlier, cache_path.name)
        if args.remeasure_cost:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            notes += ("\nThe cost columns (parameters, GFLOP, fp32 and bf16 step and inference times, peak memory) "
                      f"were measured again by `--remeasure-cost` on {when}, one variant's process after another.\n")
    else:
        rows, failed = study.run_study(settings, variants, work, cache, save, log=lambda m: print(m, flush=True))
    command = ("python scripts/study.py " + " ".join(shlex.quote(a) for a in argv)).strip()
    if rows:
        ratios = sorted({int(r["ratio"]) for r in rows})
        verdicts = claims.check_claims(rows, args.ratios or (1, 2, 4, 8), 4, args.little_drop, args.degrade_drop)
        bars = claims.check_bars(rows, [r for r in (4, 8) if r in ratios])
        md = claims.render_markdown(rows, verdicts, settings, command, settings.device, args.quick,
                                    time.perf_counter() - t0, bars, args.target_r2)
        bm.write_csv(out / f"{stem}.csv", [{k: v for k, v in r.items() if k != "curve"} for r in rows])
        md = md + ("\n" + notes if notes else "")
        atomic_write_text(out / f"{stem}.md", md)
        print(md)
        if any(r["group"] in ("front", "loss") for r in rows):
            png, front_md = front.write_front(rows, out, command, "study_front" + ("_quick" if args.quick else ""),
                                              notes=notes)
            print(f"wrote {png} and {front_md}")
    if failed:
        print(f"error: {len(failed)} variant(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
