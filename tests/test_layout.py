"""The package's house rules, checked on the source: small modules, and no private name used across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "sparsessp_monai"
MAX_LINES = 450
MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_the_line_limit(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def private_imports(path: Path) -> list[str]:
    """Names with a leading underscore imported from another module (``from x import _y``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            # dunder names (``__version__``) are public by convention
            hidden = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            found += [f"{node.module}.{name}" for name in hidden]
    return found


@pytest.mark.parametrize("folder", ["sparsessp_monai", "scripts", "tests"])
def test_no_private_name_is_imported_from_another_module(folder: str) -> None:
    offenders = {str(p.relative_to(REPO)): private_imports(p) for p in sorted((REPO / folder).rglob("*.py"))}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_checker_sees_a_private_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from a.b import _hidden, visible\n")
    assert private_imports(module) == ["a.b._hidden"]
