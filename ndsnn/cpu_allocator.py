"""Keeps freed host memory in the process, so that training on the CPU does not page-fault its big tensors in
again at every step.

PyTorch's CPU allocator is the C library's malloc. glibc serves every block above its mmap threshold (128 KiB
to 32 MiB) with a fresh mmap and gives it back on free, so each activation, gradient and pooling-index tensor
of a training step is page-faulted in (and zeroed by the kernel) anew, at every step (the README's Training
speed has what it cost the Fashion-MNIST epoch). keep_freed_memory() turns mmap-served blocks off and the
heap's trimming down (glibc's mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, INT_MAX)): freed blocks
are reused, and the process keeps its peak heap until it exits, as the caching allocators (jemalloc, tcmalloc, the
CUDA caching allocator) do. `ndsnn train` calls it on the CPU; NDSNN_CPU_ALLOCATOR=system leaves malloc alone.
Only glibc's malloc is changed; elsewhere (musl, macOS, Windows, or a preloaded jemalloc / tcmalloc, which cache
already) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

from . import settings

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied: bool | None = None  # None: not asked yet; then whether glibc took the settings


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse (once per process); True if it now does."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if settings.cpu_allocator_policy() == "system" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt takes an int: a free heap top of up to 2 GiB stays, which covers what a training step frees and
    # takes again
    trimmed = mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    unmapped = mallopt(M_MMAP_MAX, 0) == 1
    _applied = trimmed and unmapped
    return _applied


def state() -> str:
    """What the process's CPU allocator does, for results files: keep, system, or not-asked."""
    if _applied is None:
        return "not-asked"
    return "keep" if _applied else "system"
