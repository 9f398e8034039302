"""Which compiled GPU kernels run by default: only those whose tests have passed on this kind of GPU.

A record in ndsnn/verified_kernels.json says that the CUDA tests of one kernel passed on a GPU of one
architecture (sm_90 for an H100 or an H200) for one version of its sources: a hash of its .cu file and of
every csrc header that file includes. A kernel whose sources changed since, or that never ran on this
architecture, is compiled and registered but not used: its op runs the plain-PyTorch reference (or, for the
fused batch norm + LIF, the two ops separately), and a warning says so once. CPU kernels are tested on
every change (CI), so they always run.

NDSNN_UNVERIFIED_KERNELS=1 uses unverified kernels anyway: the test suite does, so that it tests them,
and benchmarks/gpu_suite.py, which writes the records (--write-verified) from the tests that passed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path

import torch

from ._build_list import PACKAGE_DIR, sources_dir

TABLE = PACKAGE_DIR / "verified_kernels.json"
TABLE_FORMAT = 1
ENV_VAR = "NDSNN_UNVERIFIED_KERNELS"

# Each CUDA kernel family: its source file (under csrc/) and the ops it registers.
KERNEL_FILES = {
    "lif": "cuda/lif_cuda.cu",
    "lif_fast": "cuda/lif_fast_cuda.cu",
    "sparse_conv2d": "cuda/sparse_conv2d_cuda.cu",
    "sparse_conv2d_tiled": "cuda/sparse_conv2d_tiled_cuda.cu",
    "batch_norm_lif": "cuda/batch_norm_lif_cuda.cu",
}
OP_KERNELS = {
    "lif_forward": "lif",
    "lif_backward": "lif",
    "lif_forward_fast": "lif_fast",
    "lif_backward_fast": "lif_fast",
    "sparse_conv2d_forward": "sparse_conv2d",
    "sparse_conv2d_grad_input": "sparse_conv2d",
    "sparse_conv2d_grad_weight": "sparse_conv2d",
    "sparse_conv2d_tiled_forward": "sparse_conv2d_tiled",
    "sparse_conv2d_tiled_grad_input": "sparse_conv2d_tiled",
    "sparse_conv2d_tiled_grad_weight": "sparse_conv2d_tiled",
    "batch_norm_stats": "batch_norm_lif",
    "batch_norm_lif_forward": "batch_norm_lif",
    "batch_norm_lif_backward": "batch_norm_lif",
}
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def trust_unverified() -> bool:
    return os.environ.get(ENV_VAR, "").strip() in ("1", "true", "yes")


def source_files(kernel: str, csrc: Path | None = None) -> list[Path]:
    """The kernel's .cu file and every csrc header it includes, directly or not (sorted)."""
    csrc = csrc or sources_dir()
    if csrc is None:
        return []
    pending, found = [csrc / KERNEL_FILES[kernel]], set()
    while pending:
        path = pending.pop().resolve()
        if path in found or not path.is_file():
            continue
        found.add(path)
        pending.extend(path.parent / name for name in _INCLUDE.findall(path.read_text()))
    return sorted(found)


@functools.cache
def source_hash(kernel: str) -> str | None:
    """A hash of what the kernel is compiled from (None when the sources are not installed)."""
    csrc = sources_dir()
    files = source_files(kernel, csrc)
    if csrc is None or not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(csrc.resolve()).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def architecture(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


@functools.cache
def records() -> tuple[dict, ...]:
    try:
        payload = json.loads(TABLE.read_text())
    except (OSError, ValueError):
        return ()
    if payload.get("format") != TABLE_FORMAT:
        return ()
    return tuple(payload.get("records", ()))


def is_verified(kernel: str, arch: str) -> bool:
    """Whether the kernel's current sources passed their tests on a GPU of this architecture."""
    digest = source_hash(kernel)
    return digest is not None and any(
        r.get("kernel") == kernel and r.get("arch") == arch and r.get("source") == digest for r in records()
    )


def allowed(op: str, device: torch.device) -> bool:
    """Whether the compiled kernel of `op` may run on `device` by default."""
    kernel = OP_KERNELS.get(op)
    if device.type != "cuda" or kernel is None or trust_unverified():
        return True
    return is_verified(kernel, architecture(device))


def summary() -> dict[str, dict]:
    """Per CUDA kernel: its source hash and the architectures it is verified on (for `ndsnn info`)."""
    return {
        kernel: {
            "source": source_hash(kernel),
            "verified_on": sorted(
                {f"{r['arch']} ({r.get('gpu', '?')})" for r in records()
                 if r.get("kernel") == kernel and r.get("source") == source_hash(kernel)}
            ),
        }
        for kernel in KERNEL_FILES
    }  # fmt: skip
