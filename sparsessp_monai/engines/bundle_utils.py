"""Helpers that bundle configs call: where the bundle lives, which checkpoint to resume from."""

from __future__ import annotations

import ast
import logging
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["as_bool", "default_bundle_root", "fast_bf16", "latest_checkpoint"]

_logger = logging.getLogger(__name__)

# this file is sparsessp_monai/engines/bundle_utils.py; the bundle sits beside the package in a source checkout
_SOURCE_BUNDLE = Path(__file__).resolve().parents[2] / "bundle"


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


def _unreadable_reason(path: Path) -> str | None:
    # torch.save writes a zip archive whose directory sits at its end: an empty or truncated file, or another
    # format, is not a zip file. A memory-mapped load then parses the whole archive without reading the tensors.
    if path.stat().st_size == 0:
        return "0 bytes"
    if not zipfile.is_zipfile(path):
        return "truncated or not a torch file"
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # any failure to load means: not usable for a resume
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def latest_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The most recently written readable resumable checkpoint ``checkpoint_epoch=N.pt`` in ``ckpt_dir``, or ``None``.

    Recency (then N) decides, so a fresh run into a folder left by an older, longer run resumes and keeps its own
    newest checkpoint rather than the older run's higher epoch number. A checkpoint that does not load (0 bytes,
    truncated, not a torch file, e.g. the remains of a killed write by an older version) is skipped with a warning
    naming it, and the next newest is tried.
    """
    found = []
    for path in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt"):
        match = re.search(r"epoch=(\d+)\.pt$", path.name)
        if match:
            found.append((path.stat().st_mtime_ns, int(match.group(1)), path))
    for _, _, path in sorted(found, reverse=True):
        reason = _unreadable_reason(path)
        if reason is None:
            return str(path)
        _logger.warning(f"skipping unreadable checkpoint {path} ({reason})")
    return None


def as_bool(value: object) -> bool:
    """A config flag as a bool; command-line overrides arrive as strings (``--resume false`` is ``"false"``).

    Raises:
        ValueError: a string that is not a recognised truth value.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", "none", ""):
            return False
        raise ValueError(f"expected a boolean flag (true/false), got {value!r}.")
    return bool(value)


def fast_bf16(device: str | torch.device) -> bool:
    """Whether bf16 autocast is likely to speed up ``device``: a CUDA GPU with bf16 support, or a CPU with native
    bf16 instructions (AVX512-BF16 or AMX). Elsewhere bf16 is emulated and slower than fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AMX":
        return True
    if capability != "AVX512":
        # also where ATen is capped below the hardware (ATEN_CPU_CAPABILITY=avx2): its kernels then emulate bf16
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
