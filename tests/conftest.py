"""Shared test helpers: the repository paths and the user's ``python -m monai.bundle run`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "bundle" / "configs"

BundleRunner = Callable[..., subprocess.CompletedProcess]

# command-line overrides for a small and fast run of train.json, same code paths as the default run
SMALL_RUN = [
    "--demo#num_per_structure", "2",
    "--demo#shape", "[32,64,64]",
    "--patch_size", "[32,32,32]",
    "--val_roi_size", "[32,64,64]",
    "--samples_per_volume", "2",
    "--batch_size", "2",
    "--val_interval", "1",
]  # fmt: skip


def run_command(
    cmd: list[str], cwd: Path = REPO, timeout: int = 400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; stdout and stderr together in ``.stdout`` (the order a user sees them
    in), with ``env`` added to the environment. On timeout the whole group is killed (torchrun's ranks too) and the
    test fails with the output so far."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... did not finish in {timeout} s:\n{out[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def run_bundle_command(*args: str, cwd: Path = REPO, timeout: int = 400) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ARGS`` as a user types it, from ``cwd`` (see :func:`run_command`)."""
    return run_command([sys.executable, "-m", "monai.bundle", "run", *args], cwd=cwd, timeout=timeout)


def train_into(root: Path, config: str, *args: str) -> Path:
    """The user's training command with ``config`` into bundle root ``root``; fails the test if it fails."""
    proc = run_bundle_command("training", "--config_file", config, "--bundle_root", str(root), *args)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return root


@pytest.fixture(scope="session")
def run_bundle() -> BundleRunner:
    """The bundle command runner (:func:`run_bundle_command`)."""
    return run_bundle_command
