"""The bundle configs as files: CT configs are overlays of the microscopy ones, and resolving a config value never
writes data (the demo data is made by the explicit ``prepare_data`` step of ``initialize``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIGS
from monai.bundle import ConfigParser


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(id path, value)`` of every leaf, with MONAI's ``#`` separator (an overlay's ``a#b`` keys stay as written)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, f"{prefix}#{key}" if prefix else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{prefix}#{i}")
    else:
        yield prefix, obj


def repeated_leaves(base: str, overlay: str) -> list[str]:
    """Leaves of ``overlay`` that restate ``base``'s value at the same id: copies an overlay need not hold."""
    ours = dict(leaves(json.loads((CONFIGS / base).read_text())))
    return [k for k, v in leaves(json.loads((CONFIGS / overlay).read_text())) if k in ours and ours[k] == v]


@pytest.mark.parametrize(
    "base, overlay, most", [("train.json", "ct_train.json", 20), ("inference.json", "ct_inference.json", 15)]
)
def test_ct_configs_are_overlays_that_restate_little_of_the_microscopy_configs(base, overlay, most) -> None:
    repeated = repeated_leaves(base, overlay)
    assert len(repeated) <= most, repeated
    assert repeated_leaves("train.json", "train.json")  # the counter sees copies


def test_every_config_ends_with_a_newline() -> None:
    for path in CONFIGS.glob("*.json"):
        assert path.read_text().endswith("}\n"), path.name


@pytest.mark.parametrize(
    "configs, ids",
    [
        (["train.json"], ["dataset_dir", "datalist_file"]),
        (["inference.json"], ["dataset_dir"]),
        (["train.json", "ct_train.json"], ["dataset_dir"]),
        (["inference.json", "ct_inference.json"], ["dataset_dir"]),
    ],
)
def test_resolving_data_paths_writes_nothing(tmp_path: Path, configs: list[str], ids: list[str]) -> None:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser["bundle_root"] = str(tmp_path)
    for i in ids:
        assert str(parser.get_parsed_content(i)).startswith(str(tmp_path))
    assert not any(tmp_path.iterdir()), "a config value wrote files"
    assert "@prepare_data" in parser["initialize"]
