"""
Named sets of study variants (:class:`~sparsessp_monai.experiments.study.Variant`), each a list of config overrides
of ``train.json``:

- ``claims``: the paper's comparison: every topology at every ratio, plus prefix nearest, suffix z-mapping and 2D
  embedding (3to2d) at the ablation ratio; the default 3to2d is also evaluated at every other ratio.
- ``front``: the accuracy-cost front at each ratio: 3to2d with 1, 2, 4 and 8 2D channels per output slice at full
  resolution (``features_2d[0] = c * depth``, doubling per level up to 512), 3D vs 2D bridge embedding, 1 x 1 vs
  5 x 5 bridge projections, two more encoder widths; 3d at three widths, including the one that shares 3to2d's
  encoder.
- ``loss``: L1 (the paper's loss) for the two best points (default: the default 3to2d and the 3d network with
  its encoder), against their MSE runs in ``front``.
- ``data``: 4, 16 and 64 demo volumes per structure for the default and that 3d network. Every run has the same
  number of steps: the study fixes ``train#trainer#epoch_length`` (Ignite restarts or continues the data loader
  as needed), so only the amount of distinct data changes.
- ``all``: all of the above (variants with the same overrides are trained once).

Overrides equal to the config's own value are dropped, so the same model has the same cache key in every set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from sparsessp_monai.experiments.benchmarking import load_config
from sparsessp_monai.experiments.study import Variant

__all__ = [
    "CLAIM_KEYS",
    "SWEEPS",
    "claim_variants",
    "data_variants",
    "decoder_widths",
    "front_variants",
    "loss_variants",
    "suffix_overrides",
    "sweep_variants",
]

CLAIM_KEYS = ("network_def#topology", "ratio", "network_def#z_mapping", "prefix_mode", "network_def#embedding")
"""Overrides along the axes of the paper's claims; a variant with no other override is a baseline."""

L1 = "$torch.nn.L1Loss()"


def _transform_index(parser: Any, list_id: str, target: str) -> int:
    """Index of the transform whose ``_target_`` ends with ``target`` in the config list ``list_id``."""
    for i, item in enumerate(parser[list_id]):
        if isinstance(item, dict) and str(item.get("_target_", "")).endswith(target):
            return i
    raise ValueError(f"no {target} in {list_id} of the config.")


def suffix_overrides(parser: Any) -> dict[str, Any]:
    """
    Suffix z-mapping through the bundle: the network gets the sparse stack (no ``PrefixResampleZd`` in training or
    validation), the validation windows are ``ratio`` times shallower (the network's output is ``ratio`` times
    deeper, MONAI scales the windows), and the training stacks start at the crop's first slice: a suffix network
    places its outputs relative to the acquired slices, so the random phase of the prefix pipeline does not apply.
    """
    prefix_train = _transform_index(parser, "train#augmentations", "PrefixResampleZd")
    prefix_val = _transform_index(parser, "validate#sparsify", "PrefixResampleZd")
    subsample = _transform_index(parser, "train#augmentations", "RandSubsampleZd")
    return {
        "network_def#z_mapping": "suffix",
        f"train#augmentations#{prefix_train}#_disabled_": True,
        f"validate#sparsify#{prefix_val}#_disabled_": True,
        f"train#augmentations#{subsample}#random_offset": False,
        "validate#inferer#inferer#roi_size": "$[@val_roi_size[0] // @ratio, *@val_roi_size[1:]]",
    }


def _make(parser: Any, name: str, overrides: dict[str, Any], group: str, eval_ratios: Sequence[int] = ()) -> Variant:
    """A variant with the overrides that equal the config's own value dropped (one cache key per model)."""
    kept = {}
    for key, value in overrides.items():
        try:
            same = key in parser and parser[key] == value
        except (KeyError, TypeError, ValueError):
            same = False
        if not same:
            kept[key] = value
    # the suffix z-mapping's transform and window overrides are part of a claim axis
    baseline = all(k in CLAIM_KEYS or k.startswith(("train#augmentations#", "validate#")) for k in kept)
    return Variant(name, kept, group, tuple(int(r) for r in eval_ratios), baseline)


def claim_variants(config_file: str | os.PathLike, ratios: Sequence[int] = (1, 2, 4, 8), ablation_ratio: int = 4,
                   generalisation: str = "3to2d") -> list[Variant]:
    """
    The paper's comparison (names as ``3to2d-r4-prefix_trilinear-emb3d``): every topology at every ratio, and at
    ``ablation_ratio`` the 3to2d ablations. The main variants of the ``generalisation`` topologies (``"all"``,
    ``"none"`` or one topology) are also evaluated at the other ratios.
    """
    parser = load_config(config_file)
    out = []
    for topology in ("3d", "2d", "3to2d", "2to3d"):
        for r in ratios:
            evals = ratios if generalisation in ("all", topology) else ()
            out.append(_make(parser, f"{topology}-r{r}-prefix_trilinear-emb3d",
                             {"network_def#topology": topology, "ratio": int(r)}, "claims", evals))
    if ablation_ratio in ratios:
        base = {"network_def#topology": "3to2d", "ratio": int(ablation_ratio)}
        out += [
            _make(parser, f"3to2d-r{ablation_ratio}-prefix_nearest-emb3d", {**base, "prefix_mode": "nearest"},
                  "claims"),
            _make(parser, f"3to2d-r{ablation_ratio}-suffix-emb3d", {**base, **suffix_overrides(parser)}, "claims"),
            _make(parser, f"3to2d-r{ablation_ratio}-prefix_trilinear-emb2d", {**base, "network_def#embedding": "2d"},
                  "claims"),
        ]
    return out


def decoder_widths(per_slice: int, depth: int, levels: int, cap: int = 512) -> list[int]:
    """2D widths with ``per_slice`` channels per output slice at full resolution, doubling per level up to ``cap``."""
    return [min(cap, per_slice * depth * 2**level) for level in range(levels)]


def _config_widths(parser: Any) -> tuple[int, list[int], int]:
    """The config's patch depth, 3D widths and 2D channels per output slice at full resolution."""
    depth = int(parser.get_parsed_content("patch_size")[0])
    enc = list(parser.get_parsed_content("network_def#features_3d"))
    return depth, enc, max(1, int(parser.get_parsed_content("network_def#features_2d")[0]) // depth)


def _encoder(width: int, levels: int) -> list[int]:
    return [width * 2**level for level in range(levels)]


def front_variants(config_file: str | os.PathLike, ratios: Sequence[int] = (4, 8),
                   per_slice: Sequence[int] = (1, 2, 4, 8), encoders: Sequence[int] = (8, 16, 32),
                   bridge_kernels: Sequence[int] = (5,)) -> list[Variant]:
    """
    The accuracy-cost front at each ratio (names as ``3to2d-c2-e16-r4``, ``3d-e16-r4``): 3to2d with the config's
    encoder and ``c`` channels per output slice; 3D vs 2D embedding at the narrowest and at 4 channels per slice;
    3to2d with the other ``encoders`` (first-level widths, doubling per level); 3d at every encoder width; and the
    default 3to2d with k x k bridge projections (``bridge_kernels``; ``-k5``), 3D and 2D embedding.
    """
    parser = load_config(config_file)
    depth, enc, c0 = _config_widths(parser)
    levels = len(enc)
    out: list[Variant] = []

    def add(name: str, r: int, topology: str, f3: list[int], f2: list[int] | None, **extra: Any) -> None:
        o = {"network_def#topology": topology, "ratio": int(r), "network_def#features_3d": f3, **extra}
        if f2 is not None:
            o["network_def#features_2d"] = f2
        out.append(_make(parser, f"{name}-r{r}", o, "front"))

    for r in ratios:
        for c in per_slice:
            add(f"3to2d-c{c}-e{enc[0]}", r, "3to2d", enc, decoder_widths(c, depth, levels))
        for c in sorted({c0, 4}):
            add(f"3to2d-c{c}-e{enc[0]}-emb2d", r, "3to2d", enc, decoder_widths(c, depth, levels),
                **{"network_def#embedding": "2d"})
        for w in encoders:
            if w != enc[0]:
                add(f"3to2d-c{c0}-e{w}", r, "3to2d", _encoder(w, levels), decoder_widths(c0, depth, levels))
        for w in encoders:
            add(f"3d-e{w}", r, "3d", enc if w == enc[0] else _encoder(w, levels), None)
        for k in bridge_kernels:
            for emb in ("3d", "2d"):
                extra = {"network_def#bridge_kernel": k, **({"network_def#embedding": "2d"} if emb == "2d" else {})}
                add(f"3to2d-c{c0}-e{enc[0]}{'-emb2d' if emb == '2d' else ''}-k{k}", r, "3to2d", enc,
                    decoder_widths(c0, depth, levels), **extra)
    return out


def _defaults(config_file: str | os.PathLike, ratios: Sequence[int]) -> list[Variant]:
    """The default 3to2d and the 3d network with its encoder, from the front, at each ratio."""
    _, enc, c0 = _config_widths(load_config(config_file))
    wanted = {f"3to2d-c{c0}-e{enc[0]}-r{r}" for r in ratios} | {f"3d-e{enc[0]}-r{r}" for r in ratios}
    return [v for v in front_variants(config_file, ratios) if v.name in wanted]


def loss_variants(config_file: str | os.PathLike, ratios: Sequence[int] = (4, 8),
                  points: Sequence[str] | None = None) -> list[Variant]:
    """
    L1 loss for ``points`` (names of ``front`` variants without the ``-r<ratio>`` suffix, e.g. ``3to2d-c4-e16``;
    default: the default 3to2d and 3d with its encoder) at each ratio; named ``<front name>-l1``.
    """
    parser = load_config(config_file)
    front = front_variants(config_file, ratios)
    if points:
        chosen = [v for v in front if v.name.rsplit("-r", 1)[0] in points]
        unknown = set(points).difference(v.name.rsplit("-r", 1)[0] for v in front)
        if unknown:
            raise ValueError(f"no front variant named {sorted(unknown)}.")
    else:
        chosen = _defaults(config_file, ratios)
    return [_make(parser, f"{v.name}-l1", {**v.overrides, "loss": L1}, "loss") for v in chosen]


def data_variants(config_file: str | os.PathLike, ratios: Sequence[int] = (4, 8),
                  sizes: Sequence[int] = (4, 16, 64)) -> list[Variant]:
    """The default 3to2d and 3d with its encoder trained on ``sizes`` demo volumes per structure (same steps)."""
    parser = load_config(config_file)
    return [
        _make(parser, f"{v.name}-n{n}", {**v.overrides, "demo#num_per_structure": int(n)}, "data")
        for v in _defaults(config_file, ratios) for n in sizes
    ]


SWEEPS: dict[str, Callable[..., list[Variant]]] = {
    "claims": lambda cfg, ratios, **kw: claim_variants(cfg, ratios or (1, 2, 4, 8), **kw),
    "front": lambda cfg, ratios, **kw: front_variants(cfg, ratios or (4, 8)),
    "loss": lambda cfg, ratios, points=None, **kw: loss_variants(cfg, ratios or (4, 8), points),
    "data": lambda cfg, ratios, **kw: data_variants(cfg, ratios or (4, 8)),
}
"""Variant sets by name: ``f(config_file, ratios or None, **options) -> variants``."""


def sweep_variants(names: Sequence[str], config_file: str | os.PathLike, ratios: Sequence[int] | None = None,
                   points: Sequence[str] | None = None, generalisation: str = "3to2d") -> list[Variant]:
    """
    The variants of the named sets (``"all"`` is every set), in order; a name listed twice (the same model in two
    sets) is kept once.
    """
    chosen = list(SWEEPS) if "all" in names else list(names)
    unknown = set(chosen).difference(SWEEPS)
    if unknown:
        raise ValueError(f"unknown sweep {sorted(unknown)}; choose from {[*SWEEPS, 'all']}.")
    out: dict[str, Variant] = {}
    for name in chosen:
        options = {"points": points} if name == "loss" else {}
        if name == "claims":
            options = {"generalisation": generalisation}
        for v in SWEEPS[name](config_file, ratios, **options):
            out.setdefault(v.name, v)
    return list(out.values())
