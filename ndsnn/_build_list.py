"""What every build of the kernels compiles, with which flags, for which torch: read from csrc/kernels.json,
the one list that setup.py, the first-use build (ndsnn/_extension.py) and CMakeLists.txt share. Imports
nothing from ndsnn, so that setup.py can load it by path while the package is being built."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_LIST = "kernels.json"


def sources_dir() -> Path | None:
    """The C++/CUDA sources: shipped inside the package, or the checkout's csrc/ for editable installs."""
    for candidate in (PACKAGE_DIR / "_csrc", PACKAGE_DIR.parent / "csrc"):
        if (candidate / BUILD_LIST).is_file():
            return candidate
    return None


def _read() -> dict:
    csrc = sources_dir()
    return json.loads((csrc / BUILD_LIST).read_text()) if csrc is not None else {}


_LIST = _read()
CPU_SOURCES: tuple[str, ...] = tuple(_LIST.get("cpu_sources", ()))
CUDA_SOURCES: tuple[str, ...] = tuple(_LIST.get("cuda_sources", ()))
# OpenMP: torch's Linux builds run at::parallel_for with OpenMP, inlined from its headers into our kernels;
# without the flag the pragma is ignored and every CPU kernel runs on one thread.
OPENMP_FLAGS: tuple[str, ...] = tuple(_LIST.get("openmp_flags", ())) if sys.platform.startswith("linux") else ()
CXX_FLAGS: tuple[str, ...] = (*_LIST.get("cxx_flags", ()), *OPENMP_FLAGS)
LINK_FLAGS: tuple[str, ...] = OPENMP_FLAGS
NVCC_FLAGS: tuple[str, ...] = tuple(_LIST.get("nvcc_flags", ()))
# Instruction sets the CPU kernels are also built for (each a library of its own: "baseline" has no flags).
ISA_FLAGS: dict[str, tuple[str, ...]] = {"baseline": (), **{k: tuple(v) for k, v in _LIST.get("isa_flags", {}).items()}}


def cpu_has(isa: str) -> bool:
    """Whether this CPU runs code built with ISA_FLAGS[isa] (avx2: AVX2, FMA and F16C)."""
    if isa == "baseline":
        return True
    if isa != "avx2" or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False
    try:
        with open("/proc/cpuinfo") as handle:  # Linux: F16C is not part of torch's capability test
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), None)
    except OSError:
        flags = None
    return flags is None or {"avx2", "fma", "f16c"} <= set(flags)


def library_name(isa: str) -> str:
    """The prebuilt extension's module name for an instruction set: ndsnn._C or ndsnn._C_avx2."""
    return "_C" if isa == "baseline" else f"_C_{isa}"


def torch_tag() -> str:
    """Identifies the running torch build; a compiled library is only valid for the same tag."""
    cuda = f"cu{torch.version.cuda}" if torch.version.cuda else "cpu"
    return f"torch{torch.__version__}-{cuda}-py{sys.version_info.major}{sys.version_info.minor}"
