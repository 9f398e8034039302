"""ndsnn.cpu_allocator: glibc's malloc keeps freed memory after keep_freed_memory() (a big block freed and taken
again is not page-faulted in anew), NDSNN_CPU_ALLOCATOR=system leaves malloc alone, a bad value is one line
naming the variable. Each case runs in a fresh process: the setting is per process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Page faults (minor) of taking a 64 MiB tensor 5 times after freeing it: fresh mmaps fault every page again.
PROBE = """
import resource, sys, torch
from ndsnn import cpu_allocator
applied = cpu_allocator.keep_freed_memory()
for _ in range(2):  # warm-up: the heap settles around the block (a small object may take the freed top once)
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(16 << 20).fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, cpu_allocator.state(), faults)
"""


def _probe(policy: str | None) -> tuple[str, str, int]:
    env = {k: v for k, v in os.environ.items() if k != "NDSNN_CPU_ALLOCATOR"}
    if policy is not None:
        env["NDSNN_CPU_ALLOCATOR"] = policy
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    applied, state, faults = result.stdout.split()
    return applied, state, int(faults)


@pytest.mark.skipif(not GLIBC, reason="the setting changes glibc's malloc only")
def test_kept_memory_is_reused_without_page_faults():
    applied, state, kept_faults = _probe(None)
    assert (applied, state) == ("True", "keep")
    applied, state, system_faults = _probe("system")
    assert (applied, state) == ("False", "system")
    pages = 5 * (64 << 20) // 4096
    assert system_faults > pages // 2  # glibc's default: every page faulted in again
    assert kept_faults < pages // 4  # kept: at most one block faulted in again, not five


def test_a_bad_value_is_one_line_naming_the_variable():
    env = {**os.environ, "NDSNN_CPU_ALLOCATOR": "jemalloc"}
    result = subprocess.run([sys.executable, "-m", "ndsnn", "info"], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NDSNN_CPU_ALLOCATOR" in lines[0] and "keep, system" in lines[0]
