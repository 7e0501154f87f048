"""
Export the development bundle as a self-contained MONAI Model Zoo bundle.

The Model Zoo runs a bundle without this package: its CI pip-installs ``required_packages_version`` from PyPI and
imports custom code from the bundle's own ``scripts/`` package. :func:`export_zoo_bundle` therefore

- copies the installed ``sparsessp_monai`` package into ``scripts/`` (generated at export time, never kept in git
  twice), its imports renamed to ``scripts``, and points the configs' ``_target_`` / ``$`` expressions at it;
- writes ``configs/metadata.json`` with public packages only (the installed versions), the metrics of the shipped
  weights (read from the ``metrics_per_structure.csv`` the bundle's evaluation wrote) and no CT configs (they need
  their own weights; they stay in the development bundle);
- copies the weights to ``models/model.pt`` and lists them with their sha256 in ``large_files.yml``;
- writes ``docs/README.md`` from the development README (Model Zoo template), with the performance, weights and
  code sections of the exported bundle.

The layout (``models/<name>/`` in the Model Zoo repository)::

    <name>/LICENSE  configs/*.json  configs/logging.conf  docs/README.md  docs/metrics_per_structure.csv
    <name>/large_files.yml  models/model.pt  scripts/__init__.py  scripts/<package modules>
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sparsessp_monai
from sparsessp_monai.io.publish import atomic_write_text, staged_folder

__all__ = [
    "REQUIRED_DISTRIBUTIONS",
    "ZOO_BUNDLE_NAME",
    "export_zoo_bundle",
    "file_sha256",
    "read_metrics_csv",
    "rename_package",
    "vendor_package",
    "zoo_metadata",
    "zoo_readme",
]

ZOO_BUNDLE_NAME = "brightfield_sparse_z_fluorescence_prediction"
"""Model Zoo folder name: data (brightfield stacks), input (sparse Z) and task (fluorescence prediction)."""

# what the vendored code and `python -m monai.bundle` import beyond torch, monai and numpy (all on PyPI)
REQUIRED_DISTRIBUTIONS = ("pytorch-ignite", "tifffile", "nibabel", "Pillow", "tqdm", "fire")
# no ``optional_packages_version``: MONAI 1.6 reads it as a deprecated alias that replaces
# ``required_packages_version`` (monai.bundle.utils.DEPRECATED_ID_MAPPING); TensorBoard (optional) is in the docs

# the exported bundle holds the microscopy model only; the CT overlays need weights of their own
CONFIG_FILES = ("train.json", "evaluate.json", "multi_gpu_train.json", "inference.json", "logging.conf")
# not needed by any config: the study / benchmark runners and this exporter
EXCLUDED_MODULES = ("experiments", "schemas", "engines/zoo_export.py")
VENDOR_NAME = "scripts"

# ``sparsessp_monai`` as a module name; not a pip requirement such as ``sparsessp_monai[czi]``
_PACKAGE_NAME = re.compile(r"\bsparsessp_monai\b(?!\[)")


def rename_package(text: str, new_name: str = VENDOR_NAME) -> str:
    """``text`` with every module reference ``sparsessp_monai`` (imports, dotted names) renamed to ``new_name``."""
    return _PACKAGE_NAME.sub(new_name, text)


def _imported_modules(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def vendor_package(dest: str | os.PathLike, package_dir: str | os.PathLike | None = None) -> list[Path]:
    """Copy the package's Python modules from ``package_dir`` (the imported ``sparsessp_monai``) into ``dest``,
    renamed so that ``dest`` is importable as ``scripts``; returns the written files.

    Raises:
        RuntimeError: a copied module would still import ``sparsessp_monai`` (the bundle must not need it).
    """
    src, dest = Path(package_dir or Path(sparsessp_monai.__file__).parent), Path(dest)
    written = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if any(rel.as_posix() == e or rel.as_posix().startswith(e + "/") for e in EXCLUDED_MODULES):
            continue
        text = rename_package(path.read_text(encoding="utf-8"))
        leftover = [m for m in _imported_modules(text) if m.split(".")[0] == "sparsessp_monai"]
        if leftover:
            raise RuntimeError(f"{rel} still imports {leftover} after renaming the package.")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)
        written.append(target)
    return written


def _rename_in(value: Any) -> Any:
    if isinstance(value, str):
        return rename_package(value)
    if isinstance(value, list):
        return [_rename_in(v) for v in value]
    if isinstance(value, dict):
        return {k: _rename_in(v) for k, v in value.items()}
    return value


def _json_text(data: Any) -> str:
    # the bundle's own style: 4-space indent, final newline
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metrics_csv(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Rows of a ``metrics_per_structure.csv`` (``PerStructureMetricsSaver``): structure -> {column: value}."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = {r["structure"]: {k: float(v) for k, v in r.items() if k != "structure"} for r in csv.DictReader(f)}
    if "all" not in rows:
        raise ValueError(f"{path}: no 'all' row; expected the metrics_per_structure.csv of the bundle's evaluation.")
    return rows


def _public_version(distribution: str) -> str:
    # a local build such as torch 2.13.0+cpu is published on PyPI as 2.13.0
    return importlib.metadata.version(distribution).split("+")[0]


def _installed(names: Sequence[str]) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = _public_version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def zoo_metadata(dev_meta: Mapping[str, Any], metrics: Mapping[str, Mapping[str, float]], protocol: str) -> dict:
    """The exported ``metadata.json``: ``dev_meta`` with installed public package versions, ``eval_metrics`` from
    the ``all`` row of ``metrics`` (mean over structures) and the descriptions of the self-contained bundle.

    Raises:
        RuntimeError: a required distribution is not installed (its version could not be recorded).
    """
    meta = {k: v for k, v in dev_meta.items() if k != "thin_slice_ct"}
    required = _installed(REQUIRED_DISTRIBUTIONS)
    missing = sorted(set(REQUIRED_DISTRIBUTIONS) - set(required))
    if missing:
        raise RuntimeError(f"install {missing} first: the exported metadata records the installed versions.")
    meta.update(
        monai_version=_public_version("monai"),
        pytorch_version=_public_version("torch"),
        numpy_version=_public_version("numpy"),
        required_packages_version=required,
    )
    meta.pop("optional_packages_version", None)
    summary = metrics["all"]
    eval_metrics: dict[str, Any] = {
        f"{name}_mean_over_structures": round(value, 4) for name, value in summary.items() if name != "n_images"
    }
    eval_metrics["protocol"] = f"{protocol}; {int(summary['n_images'])} validation images"
    meta["eval_metrics"] = eval_metrics
    meta["description"] = (
        "SparseSSP (ECCV 2024) as a MONAI bundle: the sparse transmitted-light stack is resampled to the full Z "
        "grid (prefix interpolation), then a mixed-dimension network (3D convolutional encoder, depth-to-channel "
        "folding, 2D UNet decoder) predicts the fluorescence of the requested structure, conditioned on the "
        "structure by FiLM (default_structure when no structure id is given). Full volumes are predicted with "
        "Gaussian-weighted sliding windows. The code the configs call ships in scripts/ (exported from "
        f"sparsessp_monai {sparsessp_monai.__version__}); the default configuration trains on CPU on a "
        "deterministic synthetic dataset generated on first use."
    )
    meta["data_source"] = rename_package(str(meta.get("data_source", "")))
    return meta


def _sections(markdown: str) -> list[tuple[str, str]]:
    """``markdown`` split at its ``## `` headings: (heading line or "" for the preamble, text up to the next)."""
    parts: list[tuple[str, str]] = [("", "")]
    for line in markdown.splitlines(keepends=True):
        if line.startswith("## "):
            parts.append((line.rstrip("\n"), ""))
        else:
            parts[-1] = (parts[-1][0], parts[-1][1] + line)
    return parts


def _performance_text(metrics: Mapping[str, Mapping[str, float]], protocol: str) -> str:
    columns = [c for c in next(iter(metrics.values())) if c != "n_images"]
    lines = [
        f"Metrics of the shipped `models/model.pt` ({protocol}), from the `metrics_per_structure.csv` that the "
        "bundle's evaluation wrote (copied to `docs/metrics_per_structure.csv`): per image, averaged per structure; "
        "`all` is the mean over structures, `all_images` the mean over images. R2 and Pearson r: higher is better; "
        "MSE and MAE in z-score units.",
        "",
        "| structure | images | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for structure, row in metrics.items():
        values = " | ".join(f"{row[c]:.3f}" for c in columns)
        lines.append(f"| {structure} | {int(row['n_images'])} | {values} |")
    return "\n".join(lines) + "\n\n"


def zoo_readme(
    dev_readme: str,
    metrics: Mapping[str, Mapping[str, float]],
    protocol: str,
    sha256: str,
    weights_url: str | None,
    meta: Mapping[str, Any],
) -> str:
    """The exported ``docs/README.md``: the development README (Model Zoo template) with the performance of the
    shipped weights, a weights section (URL or "not hosted yet", sha256), the exported code and dependencies, and
    without the CT section (the CT configs are not exported)."""
    packages = ", ".join(f"`{k}=={v}`" for k, v in meta["required_packages_version"].items())
    if weights_url:
        hosting = f"Download URL given at export: {weights_url} (the exporter does not check that it is live)."
    else:
        hosting = (
            "The weights are not hosted anywhere yet: `large_files.yml` has an empty `url`, and only the copy in "
            "`models/model.pt` exists. Upload that file and export again with `--weights_url URL` before "
            "submitting the bundle without its `models/` folder."
        )
    replaced = {
        "Performance": _performance_text(metrics, protocol),
        "Code and dependencies": (
            f"The code the configs call ships in `scripts/`, a copy of the `sparsessp_monai` package "
            f"{sparsessp_monai.__version__} made by the exporter (configs refer to `scripts.*`); run the commands "
            f"from the bundle folder so that `scripts` is importable. Besides MONAI {meta['monai_version']}, "
            f"PyTorch {meta['pytorch_version']} and NumPy {meta['numpy_version']} it needs {packages}, all on "
            "PyPI (`required_packages_version` of the metadata); `tensorboard` is optional (TensorBoard logs).\n\n"
        ),
    }
    out = []
    for heading, body in _sections(dev_readme):
        title = heading.strip("# *")
        if title.startswith("Thin-slice CT"):
            continue
        out.append((heading + "\n" if heading else "") + replaced.get(title, body))
        if title == "Performance":
            out.append(
                f"## **Weights**\n`models/model.pt`, sha256 `{sha256}`, listed in `large_files.yml`. {hosting}\n\n"
            )
    return "".join(out).rstrip("\n") + "\n"


def _large_files_yaml(entries: Sequence[Mapping[str, str]], hosted: bool) -> str:
    lines = [] if hosted else ["# no public hosting yet: upload models/model.pt and export again with --weights_url"]
    lines.append("large_files:")
    for entry in entries:
        # JSON strings are valid YAML scalars
        lines += [f"  - path: {json.dumps(entry['path'])}"] + [
            f"    {k}: {json.dumps(entry[k])}" for k in ("url", "hash_val", "hash_type")
        ]
    return "\n".join(lines) + "\n"


def export_zoo_bundle(
    out_dir: str | os.PathLike,
    bundle_dir: str | os.PathLike,
    weights: str | os.PathLike,
    metrics_csv: str | os.PathLike,
    weights_url: str | None = None,
    name: str = ZOO_BUNDLE_NAME,
    protocol: str = "validation split of the training data, evaluate.json",
) -> Path:
    """Write the Model Zoo bundle ``out_dir/name`` (replacing an earlier export whole, all or nothing).

    Args:
        out_dir: parent folder, e.g. the ``models`` folder of a Model Zoo checkout.
        bundle_dir: the development bundle (``configs/``, ``docs/README.md``, ``LICENSE``).
        weights: the state dict to ship as ``models/model.pt``.
        metrics_csv: ``metrics_per_structure.csv`` of these weights (the evaluate config writes it).
        weights_url: where ``models/model.pt`` will be downloadable; ``None``: not hosted yet (said in the docs).
        name: bundle folder name.
        protocol: how the metrics were measured, for the docs and ``eval_metrics``.

    Returns:
        the exported bundle folder.
    """
    bundle_dir, weights = Path(bundle_dir), Path(weights)
    for needed in (weights, Path(metrics_csv), bundle_dir / "configs" / "metadata.json", bundle_dir / "LICENSE"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found.")
    metrics = read_metrics_csv(metrics_csv)
    meta = zoo_metadata(json.loads((bundle_dir / "configs" / "metadata.json").read_text()), metrics, protocol)
    sha256 = file_sha256(weights)
    target = Path(out_dir) / name
    # a Model Zoo bundle has no room for the done-marker: published whole, without it
    with staged_folder(target, {"bundle": name, "weights_sha256": sha256}, replace=True, mark=False) as stage:
        vendor_package(stage / VENDOR_NAME)
        for config in CONFIG_FILES:
            text = (bundle_dir / "configs" / config).read_text(encoding="utf-8")
            if config.endswith(".json"):
                text = _json_text(_rename_in(json.loads(text)))
            atomic_write_text(stage / "configs" / config, text)
        atomic_write_text(stage / "configs" / "metadata.json", _json_text(meta))
        shutil.copyfile(bundle_dir / "LICENSE", stage / "LICENSE")
        for folder in ("models", "docs"):
            (stage / folder).mkdir()
        shutil.copyfile(weights, stage / "models" / "model.pt")
        shutil.copyfile(metrics_csv, stage / "docs" / "metrics_per_structure.csv")
        dev_readme = (bundle_dir / "docs" / "README.md").read_text(encoding="utf-8")
        readme = zoo_readme(dev_readme, metrics, protocol, sha256, weights_url, meta)
        atomic_write_text(stage / "docs" / "README.md", readme)
        entry = {"path": "models/model.pt", "url": weights_url or "", "hash_val": sha256, "hash_type": "sha256"}
        atomic_write_text(stage / "large_files.yml", _large_files_yaml([entry], hosted=bool(weights_url)))
    return target
