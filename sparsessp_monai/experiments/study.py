"""
Controlled study of SparseSSP's design choices: every variant is trained with the same data, seed, number of
steps, optimiser and batch order, then evaluated with sliding windows on the same validation volumes.

Variants (:func:`default_variants`):

- topologies ``3d`` / ``2d`` / ``3to2d`` / ``2to3d`` (prefix trilinear, 3D embedding), one model per ratio r;
- at the ablation ratio (4): prefix ``nearest`` vs ``trilinear`` vs a ``suffix`` z-mapping, and 3D vs 2D embedding,
  all with the ``3to2d`` topology.

Metrics (MSE, MAE, R2, Pearson r from :mod:`sparsessp_monai.metrics`) are computed per validation image, averaged
per structure, then macro-averaged over structures. :func:`sparsessp_monai.experiments.claims.check_claims` marks
each claim of the paper confirmed or refuted with its margin in macro R2.

Data are the deterministic synthetic cells (:func:`sparsessp_monai.data.make_sample`), kept in memory. Training
patches use the same random crops, flips and structure order for every variant (one generator seeded with the
study seed per variant). The sparse stack always starts at the first slice of the patch or volume (offset 0), so
prefix and suffix variants see the same acquired slices.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

__all__ = [
    "StudySettings",
    "Variant",
    "build_network",
    "default_variants",
    "evaluate",
    "macro_scores",
    "make_data",
    "replace_settings",
    "run_study",
    "train_variant",
]

METRICS = ("mse", "mae", "r2", "pearson")


def _cpu_seconds() -> float:
    """User + system CPU time of this process: on a shared machine, CPU time / threads estimates idle wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Variant:
    """One trained model of the study."""

    topology: str = "3to2d"
    ratio: int = 4
    z_mapping: str = "prefix"
    prefix_mode: str = "trilinear"
    embedding: str = "3d"

    @property
    def name(self) -> str:
        """Stable identifier, e.g. ``3to2d-r4-prefix_trilinear-emb3d``."""
        zmap = f"prefix_{self.prefix_mode}" if self.z_mapping == "prefix" else "suffix"
        return f"{self.topology}-r{self.ratio}-{zmap}-emb{self.embedding}"


def default_variants(ratios: Sequence[int] = (1, 2, 4, 8), ablation_ratio: int = 4) -> list[Variant]:
    """Every topology at every ratio (prefix trilinear, 3D embedding), plus the 3to2d ablations at one ratio."""
    out = [Variant(topology=t, ratio=int(r)) for t in ("3d", "2d", "3to2d", "2to3d") for r in ratios]
    if ablation_ratio in ratios:
        out += [
            Variant(ratio=ablation_ratio, prefix_mode="nearest"),
            Variant(ratio=ablation_ratio, z_mapping="suffix"),
            Variant(ratio=ablation_ratio, embedding="2d"),
        ]
    return out


@dataclass
class StudySettings:
    """Everything that defines the data, training budget and evaluation; the same for every variant."""

    shape: tuple[int, int, int] = (32, 96, 96)
    train_per_structure: int = 4
    val_per_structure: int = 2
    structures: tuple[str, ...] = ("dna", "membrane", "mitochondria", "microtubules", "nucleoli", "actin")
    patch: tuple[int, int, int] = (32, 64, 64)
    batch_size: int = 2
    steps: int = 900
    learning_rate: float = 2e-3
    features_3d: tuple[int, ...] = (16, 32, 64, 128)
    features_2d: tuple[int, ...] = (32, 64, 128, 256)
    seed: int = 0
    bf16: bool = False
    overlap: float = 0.25
    generalisation: str = "3to2d"  # topologies also evaluated at every other r ("all", "none" or one topology)
    ratios: tuple[int, ...] = (1, 2, 4, 8)
    ablation_ratio: int = 4

    @classmethod
    def quick(cls) -> StudySettings:
        """Tiny settings for tests: seconds per variant."""
        return cls(
            shape=(8, 32, 32), train_per_structure=1, val_per_structure=1, structures=("dna", "membrane"),
            patch=(8, 32, 32), steps=2, features_3d=(4, 8), features_2d=(8, 16), ratios=(1, 4),
        )

    @classmethod
    def full(cls) -> StudySettings:
        """GPU-sized settings: the paper's 32x128x128 patches, more data and steps."""
        return cls(
            shape=(48, 192, 192), train_per_structure=16, val_per_structure=4, patch=(32, 128, 128),
            batch_size=4, steps=3000, generalisation="all",
        )

    def fingerprint(self) -> str:
        """Hash of the settings that change results (not ``generalisation``), to invalidate a stale cache."""
        d = asdict(self)
        d.pop("generalisation")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot run."""
        if any(p > s for p, s in zip(self.patch, self.shape)):
            raise ValueError(f"patch {self.patch} is larger than the volume shape {self.shape}.")
        for r in self.ratios:
            if r < 1 or self.patch[0] % r:
                raise ValueError(f"ratio {r} must be >= 1 and divide the patch depth {self.patch[0]}.")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive.")
        multiple = 2 ** (len(self.features_3d) - 1)
        if self.patch[1] % multiple or self.patch[2] % multiple:
            raise ValueError(f"patch height and width must be divisible by {multiple}.")


Sample = dict[str, Any]


def make_data(settings: StudySettings) -> tuple[list[Sample], list[Sample]]:
    """Training and validation volumes ``{"image", "label": (1, Z, Y, X) tensors, "task", "structure"}``."""
    from sparsessp_monai.data import STRUCTURES, make_sample

    train, val = [], []
    for name in settings.structures:
        task = list(settings.structures).index(name)
        for k in range(settings.train_per_structure + settings.val_per_structure):
            seed = int(np.random.SeedSequence([settings.seed, STRUCTURES.index(name), k]).generate_state(1)[0])
            image, label = make_sample(name, seed, tuple(settings.shape))
            item = {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None],
                    "task": task, "structure": name}
            (train if k < settings.train_per_structure else val).append(item)
    return train, val


def _network_input(image: torch.Tensor, variant: Variant, ratio: int) -> torch.Tensor:
    """The network input for a full-grid ``(C, Z, Y, X)`` image acquired at ``ratio``: sparse or prefix-resampled."""
    from monai.data import MetaTensor

    from sparsessp_monai.transforms import PrefixResampleZ, SubsampleZ

    sparse = SubsampleZ(ratio=ratio)(MetaTensor(image))
    if variant.z_mapping == "suffix":
        return sparse.as_tensor()
    return PrefixResampleZ(mode=variant.prefix_mode)(sparse).as_tensor()


def build_network(variant: Variant, settings: StudySettings) -> torch.nn.Module:
    """The variant's :class:`~sparsessp_monai.networks.SparseSSPNet`, initialised from the study seed."""
    from sparsessp_monai.networks import SparseSSPNet

    torch.manual_seed(settings.seed)
    return SparseSSPNet(
        depth=settings.patch[0], topology=variant.topology, z_mapping=variant.z_mapping, ratio=variant.ratio,
        embedding=variant.embedding, features_3d=settings.features_3d, features_2d=settings.features_2d,
        num_tasks=len(settings.structures),
    )


def train_variant(
    variant: Variant, settings: StudySettings, train: list[Sample], device: torch.device
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train one variant; every variant draws the same patches in the same order. Returns the net and timings."""
    net = build_network(variant, settings).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps, eta_min=settings.learning_rate * 0.05)
    rng = np.random.default_rng(settings.seed)  # same batch sequence for every variant
    pd, ph, pw = settings.patch
    losses = []
    net.train()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for _ in range(settings.steps):
        xs, ys, tasks = [], [], []
        for _ in range(settings.batch_size):
            item = train[int(rng.integers(len(train)))]
            z, y, x = (int(rng.integers(s - p + 1)) for s, p in zip(item["image"].shape[1:], settings.patch))
            flips = [d for d, flip in zip((2, 3), rng.random(2) < 0.5) if flip]
            img = item["image"][:, z : z + pd, y : y + ph, x : x + pw]
            lab = item["label"][:, z : z + pd, y : y + ph, x : x + pw]
            if flips:
                img, lab = img.flip(flips), lab.flip(flips)
            xs.append(_network_input(img, variant, variant.ratio))
            ys.append(lab)
            tasks.append(item["task"])
        x_b, y_b = torch.stack(xs).to(device), torch.stack(ys).to(device)
        t_b = torch.tensor(tasks, device=device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16):
            loss = torch.nn.functional.mse_loss(net(x_b, t_b).float(), y_b)
        if not torch.isfinite(loss):
            raise ValueError(f"{variant.name}: non-finite training loss at step {len(losses)}.")
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    tail = losses[-max(1, len(losses) // 10) :]
    return net, {
        "train_s": seconds,
        "step_s": seconds / settings.steps,
        "train_cpu_s": cpu,
        "final_loss": sum(tail) / len(tail),
    }


def evaluate(
    net: torch.nn.Module, variant: Variant, ratio: int, settings: StudySettings, val: list[Sample],
    device: torch.device,
) -> list[dict[str, Any]]:
    """fp32 Gaussian sliding-window prediction of every validation volume acquired at ``ratio``; per-image scores."""
    from monai.inferers import SlidingWindowInferer

    from sparsessp_monai.metrics import regression_scores

    pd, ph, pw = settings.patch
    roi = [pd // ratio if variant.z_mapping == "suffix" else pd, ph, pw]
    # suffix: windows over the sparse stack, the network's output is `ratio` times deeper (MONAI scales it)
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=2, overlap=settings.overlap, mode="gaussian")
    net.eval()
    rows = []
    with torch.inference_mode():
        for item in val:
            x = _network_input(item["image"], variant, ratio)[None].to(device)
            task = torch.tensor([item["task"]], device=device)
            pred = inferer(x, net, task).float().cpu()
            scores = regression_scores(pred, item["label"][None])
            rows.append({"structure": item["structure"], **{k: float(v[0]) for k, v in scores.items()}})
    return rows


def macro_scores(per_image: list[dict[str, Any]]) -> dict[str, float]:
    """Mean per structure, then mean over structures (NaN values skipped), for every metric."""
    by: dict[str, list[dict[str, Any]]] = {}
    for row in per_image:
        by.setdefault(row["structure"], []).append(row)
    out = {}
    for m in METRICS:
        per_structure = [
            np.nanmean([r[m] for r in rows]) for rows in by.values() if any(np.isfinite(r[m]) for r in rows)
        ]
        out[m] = float(np.mean(per_structure)) if per_structure else float("nan")
    return out


# ------------------------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------------------------


def _eval_ratios(variant: Variant, settings: StudySettings) -> list[int]:
    """The variant's own ratio first, then the others if it is in the generalisation set (prefix only)."""
    ratios = [variant.ratio]
    wanted = settings.generalisation
    if variant.z_mapping == "prefix" and (wanted == "all" or wanted == variant.topology):
        is_main = variant.prefix_mode == "trilinear" and variant.embedding == "3d"
        if is_main:
            ratios += [r for r in settings.ratios if r != variant.ratio]
    return ratios


def run_study(
    settings: StudySettings,
    variants: Sequence[Variant],
    device: torch.device,
    cache: dict[str, Any],
    save_cache: Callable[[dict[str, Any]], None],
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """
    Train and evaluate every variant not already in ``cache`` (a dict persisted by ``save_cache`` after each
    variant, so a killed run resumes). Returns one row per (variant, evaluation ratio) with macro scores.
    """
    settings.validate()
    if cache.get("fingerprint") != settings.fingerprint():
        cache.clear()
        cache.update({"fingerprint": settings.fingerprint(), "settings": asdict(settings), "variants": {}})
    data = None
    for i, variant in enumerate(variants, 1):
        entry = cache["variants"].get(variant.name)
        wanted = _eval_ratios(variant, settings)
        if entry is not None and all(str(r) in entry["eval"] for r in wanted):
            log(f"[{i}/{len(variants)}] {variant.name}: cached")
            continue
        if data is None:
            t0 = time.perf_counter()
            data = make_data(settings)
            seconds = time.perf_counter() - t0
            log(f"data: {len(data[0])} training and {len(data[1])} validation volumes ({seconds:.1f} s)")
        net, timing = train_variant(variant, settings, data[0], device)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        evals = {str(r): evaluate(net, variant, r, settings, data[1], device) for r in wanted}
        timing["eval_s"], timing["eval_cpu_s"] = time.perf_counter() - t0, _cpu_seconds() - c0
        cache["variants"][variant.name] = {"variant": asdict(variant), "timing": timing, "eval": evals}
        save_cache(cache)
        r2 = macro_scores(evals[str(variant.ratio)])["r2"]
        log(f"[{i}/{len(variants)}] {variant.name}: R2 {r2:.4f}, train {timing['train_s']:.0f} s "
            f"({timing['step_s']:.2f} s/step, CPU {timing['train_cpu_s']:.0f} s), eval {timing['eval_s']:.0f} s "
            f"(CPU {timing['eval_cpu_s']:.0f} s)")
    rows = []
    for variant in variants:
        entry = cache["variants"][variant.name]
        for r, per_image in entry["eval"].items():
            rows.append({
                "variant": variant.name, **asdict(variant), "eval_ratio": int(r), **macro_scores(per_image),
                "images": len(per_image), **{k: round(v, 4) for k, v in entry["timing"].items()},
            })
    return rows


def replace_settings(settings: StudySettings, **changes: Any) -> StudySettings:
    """A copy of ``settings`` with the given fields changed (``None`` values are ignored)."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
