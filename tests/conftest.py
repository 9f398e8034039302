"""Shared fixtures: the devices to test on (CUDA tests are collected and skipped without a GPU)."""

from __future__ import annotations

import os

# The kernel tests are what verifies a CUDA kernel on a new GPU: they must run kernels that have no
# verification record yet (ndsnn._verification); the gate's own tests switch this off where they need to.
os.environ.setdefault("NDSNN_UNVERIFIED_KERNELS", "1")
# The sparse layers decide dense vs sparse from the shipped crossover table in the tests (no timing: the same
# kernels on every run); the measured dispatch has tests of its own (test_dispatch.py).
os.environ.setdefault("NDSNN_DISPATCH", "table")

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no GPU")])]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_determinism_flags():
    """`ndsnn train --deterministic` sets process-wide flags; each test gets back the ones it started with."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn_deterministic, cudnn_benchmark = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, cudnn_benchmark
