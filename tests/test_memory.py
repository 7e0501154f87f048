"""keep_freed_memory: freed tensors stay in the process instead of being faulted in again on every step."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from conftest import REPO

PROBE = """
import resource, sys, torch
from sparsessp_monai.engines import keep_freed_memory
applied = keep_freed_memory(sys.argv[1] == "on")
x = torch.ones(8 << 20)  # 32 MiB
def step():
    return float((x * 2.0 + 1.0).sum())  # two temporaries of 32 MiB, freed at once
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return bool(int(applied)), int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    applied_off, faults_off = _faults("off")
    applied_on, faults_on = _faults("on")
    assert not applied_off and applied_on
    # without it every 32 MiB temporary is a fresh mmap: 8192 pages each, two per step
    assert faults_off > 20 * 8192
    assert faults_on < faults_off / 20
