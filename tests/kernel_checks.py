"""Checks that a value came from the compiled kernel, not from the plain-PyTorch reference it is compared with.

A test of a kernel against its reference proves nothing when the op silently fell back to the reference on
both sides. require_kernel fails (never skips) when the kernel for the test's device is missing, except on a
CPU-only session run with NDSNN_KERNELS=off on purpose; ops_called records which ndsnn ops the dispatcher
actually ran (a TorchDispatchMode sees every op call below autograd, forward and backward alike).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ndsnn import _extension


def require_kernel(op: str, device: torch.device) -> None:
    if _extension.has_kernel(op, device.type):
        return
    if device.type == "cpu" and os.environ.get("NDSNN_KERNELS", "").lower() == "off":
        pytest.skip("NDSNN_KERNELS=off: this session tests the reference only")
    status = _extension.load()
    pytest.fail(f"no compiled {device.type} kernel for {op} ({status.source}: {'; '.join(status.messages)})")


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


def ops_called(fn: Callable[[], object]) -> tuple[object, set[str]]:
    """fn()'s result and the names of the ndsnn ops (e.g. "lif_forward") that ran while it did."""
    with _Recorder() as recorder:
        result = fn()
    return result, {name.split("::", 1)[1] for name in recorder.names if name.startswith("ndsnn::")}


def assert_kernels_ran(called: set[str], *ops: str) -> None:
    missing = [op for op in ops if op not in called]
    assert not missing, f"the compiled ops {missing} did not run (ran: {sorted(called) or 'no ndsnn op'})"
