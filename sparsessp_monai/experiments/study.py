"""
Controlled study of SparseSSP's design choices, run through the shipped bundle itself.

Every variant is a set of config overrides of ``bundle/configs/train.json`` (``network_def#topology``,
``network_def#features_3d``, ``ratio``, ``loss``, ``demo#num_per_structure``, ...). Each one runs in a fresh
subprocess (:mod:`sparsessp_monai.experiments.study_worker`) through :class:`monai.bundle.ConfigWorkflow`: the
same transforms (random Z phase, flips, 90 degree rotations), ``SupervisedTrainer``, evaluator and per-structure
metrics as ``python -m monai.bundle run training --config_file bundle/configs/train.json``. Its scores are the
macro averages (mean per structure, then over structures) of the ``eval/metrics_per_structure.csv`` the bundle's
evaluator writes.

:class:`StudySettings` adds the overrides every variant shares (epochs budget, a fixed number of steps per epoch,
seed, data size, device), so every point gets the same data, seed and number of optimiser steps. Results go into a
resumable JSON cache keyed by the variant's overrides and a fingerprint of the settings and configs: a killed run
continues where it stopped, and a variant listed twice under two names is trained once.

The named variant sets (the paper's claims, the accuracy-cost front) are in :mod:`sparsessp_monai.experiments.sweeps`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_DIR",
    "METRICS",
    "StudySettings",
    "Variant",
    "cached_entries",
    "cached_rows",
    "demo_folder",
    "describe",
    "entry_rows",
    "merged_overrides",
    "remeasure_costs",
    "replace_settings",
    "run_study",
    "run_variant",
    "settings_record",
    "variant_key",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "bundle" / "configs"
"""The bundle's configs in a source checkout."""

METRICS = ("mse", "mae", "r2", "pearson")
"""Scores of a result row; the bundle's evaluator names them ``val_<metric>``."""


@dataclass
class Variant:
    """
    One trained model of the study: a name and the overrides of ``train.json`` that define it.

    Args:
        name: label in reports (the cache is keyed by the overrides, not the name).
        overrides: ``{config id: value}`` as ``monai.bundle`` takes them, e.g. ``{"network_def#topology": "3d"}``.
        group: the variant set it belongs to (``"claims"``, ``"front"``, ...), for reports.
        eval_ratios: ratios the trained model is also evaluated at (``evaluate.json`` with ``ratio`` overridden).
        baseline: whether only the axes of the paper's claims differ from the config (topology, ratio, z-mapping,
            prefix mode, embedding), so :func:`~sparsessp_monai.experiments.claims.check_claims` may use it.
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    group: str = ""
    eval_ratios: tuple[int, ...] = ()
    baseline: bool = True


@dataclass
class StudySettings:
    """
    The overrides every variant shares; ``None`` keeps the config's value.

    The budget is ``epochs`` epochs of exactly ``steps_per_epoch`` optimiser steps (``train#trainer#epoch_length``),
    whatever the training-set size, and the model is validated once, after the last epoch.
    """

    config_file: str = str(CONFIG_DIR / "train.json")
    eval_config_file: str = str(CONFIG_DIR / "evaluate.json")
    epochs: int = 12
    steps_per_epoch: int = 36  # the default run's: 36 training volumes of the demo data, batch 1
    seed: int = 0
    bf16: bool = False
    device: str = "cpu"
    num_per_structure: int | None = None
    demo_shape: tuple[int, int, int] | None = None
    structures: tuple[str, ...] | None = None
    patch: tuple[int, int, int] | None = None
    val_roi: tuple[int, int, int] | None = None
    samples_per_volume: int | None = None
    batch_size: int | None = None
    features_3d: tuple[int, ...] | None = None
    features_2d: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # any other override (``--override ID=JSON``)
    cost_warmup: int = 2  # untimed and timed repeats of the cost measurement (not part of the fingerprint)
    cost_repeats: int = 5
    threads: int | None = None

    @classmethod
    def quick(cls) -> StudySettings:
        """Tiny settings for tests: two structures, one training volume each, 1 epoch of 2 steps."""
        return cls(
            epochs=1, steps_per_epoch=2, num_per_structure=2, demo_shape=(16, 32, 32), structures=("dna", "membrane"),
            patch=(8, 32, 32), val_roi=(8, 32, 32), samples_per_volume=1, batch_size=1, features_3d=(4, 8),
            features_2d=(8, 16), cost_warmup=0, cost_repeats=1,
        )

    def overrides(self) -> dict[str, Any]:
        """The config overrides of these settings (before the variant's own, which take precedence)."""
        out: dict[str, Any] = {
            "train#trainer#max_epochs": self.epochs,
            "train#trainer#epoch_length": self.steps_per_epoch,
            "val_interval": self.epochs,  # validate once, at the end: model.pt is then the final model
            "ckpt_interval": self.epochs,
            "seed": self.seed,
            "bf16": self.bf16,
            "device": f"$torch.device('{'cuda:0' if self.device == 'cuda' else 'cpu'}')",
            "use_tensorboard": False,
            "use_progress_bar": False,
        }
        optional = {
            "demo#num_per_structure": self.num_per_structure, "demo#shape": self.demo_shape,
            "structures": self.structures, "patch_size": self.patch, "val_roi_size": self.val_roi,
            "samples_per_volume": self.samples_per_volume, "batch_size": self.batch_size,
            "network_def#features_3d": self.features_3d, "network_def#features_2d": self.features_2d,
        }
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in optional.items() if v is not None})
        out.update(self.extra)
        return out

    def fingerprint(self) -> str:
        """Hash of what changes results: the shared overrides and the text of both configs."""
        text = [Path(f).read_text(encoding="utf-8") for f in (self.config_file, self.eval_config_file)]
        blob = json.dumps({"overrides": self.overrides(), "configs": text}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot run."""
        for f in (self.config_file, self.eval_config_file):
            if not Path(f).is_file():
                raise ValueError(f"config file not found: {f}")
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError("epochs and steps_per_epoch must be positive.")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}.")


def replace_settings(settings: StudySettings, **changes: Any) -> StudySettings:
    """A copy of ``settings`` with the given fields changed (``None`` values are ignored)."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})


def merged_overrides(settings: StudySettings, variant: Variant) -> dict[str, Any]:
    """The overrides a variant runs with: the settings', then the variant's own."""
    return {**settings.overrides(), **variant.overrides}


def variant_key(settings: StudySettings, variant: Variant) -> str:
    """Cache key of a variant: its overrides and the settings' fingerprint (not its name)."""
    blob = json.dumps({"fingerprint": settings.fingerprint(), "overrides": variant.overrides}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe(config_file: str | os.PathLike, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """
    The study axes of a config with ``overrides``: topology, ratio, z-mapping, prefix mode, embedding, widths,
    loss, data size, patch, epochs and steps per epoch, and the bridge kernel where it is not 1, as plain values
    for result rows.
    """
    from sparsessp_monai.experiments.benchmarking import load_config

    parser = load_config(config_file, dict(overrides))
    trainer = parser["train#trainer"]
    return {
        "topology": parser["network_def#topology"],
        "ratio": int(parser.get_parsed_content("ratio")),
        "z_mapping": parser["network_def#z_mapping"],
        "prefix_mode": parser.get_parsed_content("prefix_mode"),
        "embedding": parser["network_def#embedding"],
        "features_3d": list(parser.get_parsed_content("network_def#features_3d")),
        "features_2d": list(parser.get_parsed_content("network_def#features_2d")),
        "loss": str(parser["loss"]).lstrip("$").replace("torch.nn.", ""),
        "num_per_structure": int(parser.get_parsed_content("demo#num_per_structure")),
        "patch": list(parser.get_parsed_content("patch_size")),
        "epochs": int(trainer["max_epochs"]),
        "epoch_length": trainer.get("epoch_length"),
        # only where it differs from the 1 x 1 default, so the axes recorded before the option existed still match
        **({"bridge_kernel": kernel} if (kernel := int(parser.get("network_def#bridge_kernel", 1))) != 1 else {}),
    }


def demo_folder(work: Path, overrides: Mapping[str, Any], config_file: str | os.PathLike) -> Path:
    """A demo-data folder shared by every variant with the same generator arguments (generated once)."""
    from sparsessp_monai.experiments.benchmarking import load_config

    parser = load_config(config_file, dict(overrides))
    args = {k: parser.get_parsed_content(k) for k in ("demo#num_per_structure", "demo#shape", "demo#seed")}
    args["structures"] = list(parser.get_parsed_content("structures"))
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:10]
    return work / "data" / f"demo-n{args['demo#num_per_structure']}-{digest}"


def _worker_env(threads: int | None) -> dict[str, str]:
    """The environment of a variant's subprocess: this checkout first on the path, the requested threads."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_variant(settings: StudySettings, variant: Variant, bundle_root: Path, eval_ratios: Sequence[int],
                train: bool = True, cost_only: bool = False) -> dict[str, Any]:
    """
    Train (``train=True``) and evaluate one variant in a fresh subprocess into ``bundle_root``, or only measure
    its cost (``cost_only=True``: ``{"cost": ...}``); returns the worker's result (see
    :func:`sparsessp_monai.experiments.study_worker.run_variant`). Its log is ``bundle_root/study_worker.log``.

    Raises:
        RuntimeError: the subprocess failed; the message ends with the log's tail.
    """
    from sparsessp_monai.io.publish import atomic_write_text

    bundle_root.mkdir(parents=True, exist_ok=True)
    overrides = merged_overrides(settings, variant)
    overrides["demo_dir"] = str(demo_folder(bundle_root.parent, overrides, settings.config_file))
    spec = {
        "config_file": settings.config_file, "eval_config_file": settings.eval_config_file,
        "bundle_root": str(bundle_root), "overrides": overrides, "train": train,
        "eval_ratios": [int(r) for r in eval_ratios], "device": settings.device, "threads": settings.threads,
        "cost_warmup": settings.cost_warmup, "cost_repeats": settings.cost_repeats, "cost_only": bool(cost_only),
    }
    spec_path = atomic_write_text(bundle_root / "study_spec.json", json.dumps(spec, indent=1, default=str))
    result_path = bundle_root / "study_result.json"
    result_path.unlink(missing_ok=True)
    log_path = bundle_root / "study_worker.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "sparsessp_monai.experiments.study_worker", str(spec_path), str(result_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=bundle_root, env=_worker_env(settings.threads), check=False,
        )
    if proc.returncode or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{variant.name}: bundle run failed ({proc.returncode}), log {log_path}:\n{tail}")
    return json.loads(result_path.read_text(encoding="utf-8"))


def _rows(variant: Variant, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One result row per evaluation ratio of a cached entry, the own ratio first."""
    # the default: the config's own network, at any ratio
    base = {"variant": variant.name, "group": variant.group, "baseline": variant.baseline,
            "default": set(variant.overrides) <= {"ratio"}, **entry["axes"]}
    cost, timing = dict(entry["cost"]), dict(entry["timing"])
    rows = []
    own = str(entry["axes"]["ratio"])
    for r in sorted(entry["eval"], key=lambda r: (r != own, int(r))):
        scores = entry["eval"][r]
        rows.append({**base, "eval_ratio": int(r), **{m: scores[m] for m in METRICS}, "images": scores["images"],
                     **cost, **timing, "bundle_root": entry["bundle_root"]})
    return rows


def cached_entries(
    settings: StudySettings, variants: Sequence[Variant], cache: Mapping[str, Any]
) -> tuple[list[tuple[Variant, dict[str, Any]]], list[str], dict[str, str]]:
    """``(variant, entry)`` pairs of the variants found in ``cache``, the missing names and the entries of an
    earlier config text (see :func:`cached_rows`, which this finds the entries for)."""
    entries = cache.get("variants", {}) if cache.get("version") == 2 else {}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for entry in entries.values():
        by_name.setdefault(entry["name"], []).append(entry)
    found: list[tuple[Variant, dict[str, Any]]] = []
    missing: list[str] = []
    earlier: dict[str, str] = {}
    for variant in variants:
        entry = entries.get(variant_key(settings, variant))
        if entry is None:
            axes = describe(settings.config_file, merged_overrides(settings, variant))
            same = [e for e in by_name.get(variant.name, []) if e["axes"] == axes]
            if not same:
                missing.append(variant.name)
                continue
            entry = same[-1]
            earlier[variant.name] = entry["fingerprint"]
        found.append((variant, entry))
    return found, missing, earlier


def remeasure_costs(settings: StudySettings, found: Sequence[tuple[Variant, dict[str, Any]]], work: str | os.PathLike,
                    save_cache: Callable[[], None], log: Callable[[str], None] = print) -> None:
    """
    Measure the cost of every ``(variant, entry)`` again, one fresh subprocess after another (so that on a quiet
    machine no two measurements share the cores), and store it in the entry with the time it was measured; the
    cache is saved after each. Training and evaluation figures are left as they are.
    """
    for i, (variant, entry) in enumerate(found, 1):
        root = Path(work) / f"{variant.name}-cost"
        entry["cost"] = run_variant(settings, variant, root, [], train=False, cost_only=True)["cost"]
        entry["cost_measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        save_cache()
        c = entry["cost"]
        log(f"[{i}/{len(found)}] {variant.name}: fp32 train step {c['train_step_s']:.3f} s, inference "
            f"{c['infer_s']:.4f} s/patch")


def cached_rows(
    settings: StudySettings, variants: Sequence[Variant], cache: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """
    The result rows of ``variants`` from ``cache`` alone, training and evaluating nothing (the study's report-only
    mode).

    A variant's own entry (its overrides under the current settings' fingerprint) is used when it is there.
    Otherwise an entry of the same name made with an earlier text of the configs is used if its recorded axes (the
    network, ratio, z-mapping, loss, data, patch, budget: :func:`describe`) are those the variant has now; such
    variants are returned in ``earlier`` with that entry's fingerprint, so a report can say which points come from
    which config text. Variants with neither are returned in ``missing`` and have no rows.

    Returns:
        ``(rows, missing, earlier)``.
    """
    found, missing, earlier = cached_entries(settings, variants, cache)
    return entry_rows(found), missing, earlier


def entry_rows(found: Sequence[tuple[Variant, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The result rows of ``(variant, entry)`` pairs (:func:`cached_entries`), in their order."""
    return [row for variant, entry in found for row in _rows(variant, entry)]


def run_study(
    settings: StudySettings,
    variants: Sequence[Variant],
    work: str | os.PathLike,
    cache: dict[str, Any],
    save_cache: Callable[[dict[str, Any]], None],
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[str]]:
    """
    Run every variant not already in ``cache`` through the bundle, one subprocess each, with bundle roots under
    ``work``; ``save_cache`` persists the cache after each variant, so a killed run resumes.

    A cached variant that lacks an evaluation ratio is evaluated again from its saved model (no training), as
    long as its bundle root still holds it. A variant that fails is logged and skipped; the sweep goes on.

    Returns:
        The result rows (one per variant and evaluation ratio: the study axes of :func:`describe`, macro
        ``mse, mae, r2, pearson``, cost and timing columns) and the names of the variants that failed.
    """
    settings.validate()
    fingerprint = settings.fingerprint()
    if cache.get("version") != 2:
        cache.clear()
        cache.update({"version": 2, "variants": {}})
    work = Path(work)
    rows, failed = [], []
    for i, variant in enumerate(variants, 1):
        key = variant_key(settings, variant)
        entry = cache["variants"].get(key)
        own = describe(settings.config_file, merged_overrides(settings, variant))["ratio"]
        wanted = [own, *(r for r in variant.eval_ratios if r != own)]
        missing = [r for r in wanted if entry is None or str(r) not in entry["eval"]]
        tag = f"[{i}/{len(variants)}] {variant.name}"
        if not missing:
            log(f"{tag}: cached")
            rows += _rows(variant, entry)
            continue
        bundle_root = work / f"{variant.name}-{key[:8]}"
        retrain = entry is None or not (bundle_root / "models" / "model.pt").is_file()
        try:
            result = run_variant(settings, variant, bundle_root, wanted if retrain else missing, train=retrain)
        except RuntimeError as exc:
            log(f"{tag}: FAILED\n{exc}")
            failed.append(variant.name)
            continue
        if retrain:
            entry = {"name": variant.name, "fingerprint": fingerprint, "overrides": variant.overrides,
                     "axes": describe(settings.config_file, merged_overrides(settings, variant)),
                     "bundle_root": str(bundle_root), "cost": result["cost"], "timing": result["timing"],
                     "eval": {}}
        entry["eval"].update(result["eval"])
        cache["variants"][key] = entry
        save_cache(cache)
        t, c = entry["timing"], entry["cost"]
        log(f"{tag}: R2 {entry['eval'][str(own)]['r2']:.4f}, {t['iterations']} steps in {t['train_s']:.1f} s "
            f"({t['step_s']:.3f} s/step, bundle CPU {t['bundle_cpu_s']:.1f} s); fp32 train step "
            f"{c['train_step_s']:.3f} s, {c['gflop']:.2f} GFLOP/patch, {c['params_m']:.3f} M parameters")
        rows += _rows(variant, entry)
    return rows, failed


def settings_record(settings: StudySettings) -> dict[str, Any]:
    """The settings as plain JSON values (for reports)."""
    return json.loads(json.dumps(asdict(settings), default=str))
