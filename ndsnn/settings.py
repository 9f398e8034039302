"""The NDSNN_* environment variables, each read and checked here: a bad value is a SettingsError whose one-line
message names the variable and what it expects (`ndsnn` prints it and exits with code 2).

NDSNN_KERNELS       auto | prebuilt | jit | off: which compiled kernels to load (ndsnn._extension)
NDSNN_CACHE_DIR     where kernels compiled on first use are cached (default ~/.cache/ndsnn)
NDSNN_CROSSOVER_FILE            a crossover table measured on this machine (ndsnn.ops.crossover)
NDSNN_SPARSE_CONV_MAX_DENSITY   one crossover density in [0, 1] for every layer
NDSNN_DATA          the data directory when --data-dir is not given (ndsnn.data)
NDSNN_UNVERIFIED_KERNELS=1      also run CUDA kernels not yet verified on this GPU (ndsnn._verification)
NDSNN_DISPATCH      measure (default) | table: how a sparse layer picks sparse or dense kernels (ndsnn.ops.dispatch)
NDSNN_CPU_ISA       auto (default) | baseline | avx2: which build of the CPU kernels to load (ndsnn._extension)
NDSNN_CPU_ALLOCATOR keep (default) | system: whether training on the CPU keeps freed memory (ndsnn.cpu_allocator)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ._files import directory_problem

KERNEL_POLICIES = ("auto", "prebuilt", "jit", "off")


class SettingsError(ValueError):
    """An NDSNN_* environment variable has a value ndsnn cannot use; the message names it."""


def kernel_policy() -> str:
    value = os.environ.get("NDSNN_KERNELS", "auto").strip().lower() or "auto"
    if value not in KERNEL_POLICIES:
        raise SettingsError(f"NDSNN_KERNELS must be one of {', '.join(KERNEL_POLICIES)}; got {value!r}")
    return value


CPU_ISAS = ("auto", "baseline", "avx2")


def cpu_isa() -> str:
    value = os.environ.get("NDSNN_CPU_ISA", "auto").strip().lower() or "auto"
    if value not in CPU_ISAS:
        raise SettingsError(f"NDSNN_CPU_ISA must be one of {', '.join(CPU_ISAS)}; got {value!r}")
    return value


CPU_ALLOCATOR_POLICIES = ("keep", "system")


def cpu_allocator_policy() -> str:
    value = os.environ.get("NDSNN_CPU_ALLOCATOR", "keep").strip().lower() or "keep"
    if value not in CPU_ALLOCATOR_POLICIES:
        raise SettingsError(f"NDSNN_CPU_ALLOCATOR must be one of {', '.join(CPU_ALLOCATOR_POLICIES)}; got {value!r}")
    return value


def cache_root() -> Path:
    """The directory of compiled-kernel caches (one subdirectory per torch build and source version)."""
    base = os.environ.get("NDSNN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ndsnn"
    )
    return Path(base)


def max_density_override() -> float | None:
    """NDSNN_SPARSE_CONV_MAX_DENSITY as a number in [0, 1], or None when unset."""
    text = os.environ.get("NDSNN_SPARSE_CONV_MAX_DENSITY")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"NDSNN_SPARSE_CONV_MAX_DENSITY must be a number in [0, 1]; got {text!r}")
    return value


def crossover_file(default: Path) -> Path:
    """NDSNN_CROSSOVER_FILE, or `default` (the table shipped with the package)."""
    text = os.environ.get("NDSNN_CROSSOVER_FILE")
    return Path(text) if text else default


def check_cache_dir() -> None:
    """Raises SettingsError when NDSNN_CACHE_DIR is set to a place where no cache can be created."""
    if not os.environ.get("NDSNN_CACHE_DIR"):
        return
    root = cache_root()
    problem = directory_problem(root)
    if problem is not None:
        raise SettingsError(f"NDSNN_CACHE_DIR={root} {problem}")
