"""Shared test helpers: the repository paths and the user's ``python -m monai.bundle run`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "bundle" / "configs"

BundleRunner = Callable[..., subprocess.CompletedProcess]


def run_bundle_command(*args: str, cwd: Path = REPO, timeout: int = 400) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ARGS`` as a user types it, from ``cwd``; stdout and stderr together in
    ``.stdout`` (the order a user sees them in)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def run_bundle() -> BundleRunner:
    """The bundle command runner (:func:`run_bundle_command`)."""
    return run_bundle_command
