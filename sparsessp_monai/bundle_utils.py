"""Helpers that bundle configs call: where the bundle lives, which checkpoint to resume from."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["default_bundle_root", "latest_checkpoint"]

_SOURCE_BUNDLE = Path(__file__).resolve().parent.parent / "bundle"


def _config_files_from_argv(argv: Sequence[str]) -> list[str]:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        if value.strip().startswith("["):  # monai.bundle accepts "['a.json','b.json']" to merge configs
            try:
                return [str(v) for v in ast.literal_eval(value)]
            except (ValueError, SyntaxError):
                return []
        return [value]
    return []


def default_bundle_root(argv: Sequence[str] | None = None) -> str:
    """The bundle folder, so that outputs land in the bundle and not wherever the command was started.

    In order: the parent of the ``configs`` folder of the first ``--config_file`` on the command line
    (``python -m monai.bundle run ... --config_file bundle/configs/train.json`` gives ``bundle``); the ``bundle``
    folder of a source checkout next to this package; the current directory. ``--bundle_root`` overrides it.
    """
    files = _config_files_from_argv(sys.argv if argv is None else argv)
    if files:
        parent = Path(files[0]).resolve().parent
        return str(parent.parent if parent.name == "configs" else parent)
    if (_SOURCE_BUNDLE / "configs").is_dir():
        return str(_SOURCE_BUNDLE)
    return str(Path.cwd())


def latest_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The newest resumable checkpoint in ``ckpt_dir`` (``checkpoint_epoch=N.pt``, highest N), or ``None``."""
    best, best_epoch = None, -1
    for path in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt"):
        match = re.search(r"epoch=(\d+)\.pt$", path.name)
        if match and int(match.group(1)) > best_epoch:
            best, best_epoch = str(path), int(match.group(1))
    return best
