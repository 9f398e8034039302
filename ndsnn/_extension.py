"""Finding, checking and loading the compiled kernels.

Order of preference:
1. the library built by ``setup.py`` next to this file (``ndsnn/_C*.so``), if it was built against the
   torch that is running (a library built against another torch is refused: loading it could crash);
   CPU-only builds come as one library per instruction set (``_C``: baseline x86-64, ``_C_avx2``: AVX2, FMA
   and F16C), of which the widest this CPU runs is loaded (``NDSNN_CPU_ISA=auto|baseline|avx2``);
2. a library compiled on first use with ``torch.utils.cpp_extension.load`` (ninja), for that instruction set,
   cached under
   ``$NDSNN_CACHE_DIR`` (default ``~/.cache/ndsnn``) per torch, Python and CUDA version and per version of the
   sources (a hash of their contents, their location and the flags), so that two checkouts, or two versions
   of one, each keep their own build instead of rebuilding each other's on every import;
3. nothing: every op runs its plain-PyTorch reference, and a warning says so once.

``NDSNN_KERNELS`` selects the policy: ``auto`` (default, 1 then 2), ``prebuilt`` (1 only), ``jit`` (2 only)
or ``off`` (3). A value that is none of these, or an NDSNN_CACHE_DIR that cannot be created, makes every use
of the kernels raise SettingsError (importing ndsnn still works, so that the command line can report it in
one line).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _verification, settings
from ._build_list import (  # noqa: F401  (re-exported: the build's sources and flags)
    CPU_SOURCES,
    CUDA_SOURCES,
    CXX_FLAGS,
    ISA_FLAGS,
    LINK_FLAGS,
    NVCC_FLAGS,
    PACKAGE_DIR,
    cpu_has,
    library_name,
    sources_dir,
    torch_tag,
)

OPS = (
    "lif_forward",
    "lif_backward",
    "lif_forward_fast",
    "lif_backward_fast",
    "lif_repeated_forward",
    "lif_repeated_backward",
    "lif_repeated_max_pool_forward",
    "lif_repeated_max_pool_backward",
    "sparse_conv2d_forward",
    "sparse_conv2d_grad_input",
    "sparse_conv2d_grad_weight",
    "sparse_conv2d_tiled_forward",
    "sparse_conv2d_tiled_grad_input",
    "sparse_conv2d_tiled_grad_weight",
    "max_pool_window_forward",
    "max_pool_window_backward",
    "sparse_linear_forward",
    "sparse_linear_grad_input",
    "sparse_linear_grad_weight",
    "batch_norm_stats",
    "batch_norm_lif_forward",
    "batch_norm_lif_backward",
)
REBUILD_HINT = "pip install --no-build-isolation -e . (or delete that file to compile on first use)"


@dataclass
class KernelStatus:
    """Which compiled library, if any, serves the ops, and why."""

    source: str = "none"  # "prebuilt", "jit" or "none"
    path: str | None = None
    build_info: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    kernels: frozenset[tuple[str, str]] = frozenset()  # (op, device type) pairs with a compiled kernel
    isa: str = "baseline"  # the instruction set the CPU kernels of the loaded library were built for

    @property
    def loaded(self) -> bool:
        return self.source != "none"


_status: KernelStatus | None = None


def prebuilt_library(isa: str = "baseline") -> Path | None:
    """setup.py's library for an instruction set: ndsnn/_C.<tag>.so, or ndsnn/_C_avx2.<tag>.so."""
    name = library_name(isa)
    found = [p for p in sorted(PACKAGE_DIR.glob(f"{name}.*")) if p.suffix in (".so", ".pyd")]
    return found[0] if found else None


def chosen_isa(with_cuda: bool) -> str:
    """The build of the CPU kernels to load: NDSNN_CPU_ISA, where auto is the widest this CPU runs. A build
    with CUDA kernels is one library (the baseline CPU kernels beside them)."""
    setting = settings.cpu_isa()
    if with_cuda or setting == "baseline":
        return "baseline"
    if setting == "avx2" and not cpu_has("avx2"):
        raise settings.SettingsError("NDSNN_CPU_ISA=avx2, but this CPU lacks AVX2, FMA or F16C")
    return "avx2" if "avx2" in ISA_FLAGS and cpu_has("avx2") else "baseline"


def _parse_build_info(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


def prebuilt_refusal(library: Path, info_file: Path) -> str | None:
    """Why a prebuilt library must not be loaded into this process, or None if it may be."""
    try:
        built = json.loads(info_file.read_text())
    except (OSError, ValueError):
        built = {}
    built_for = built.get("torch_tag")
    if built_for == torch_tag():
        return None
    return (
        f"refused {library}: it was built for {built_for or 'an unknown torch (no ' + info_file.name + ')'}, "
        f"but {torch_tag()} is running; rebuild with: {REBUILD_HINT}"
    )


def _try_prebuilt(status: KernelStatus) -> bool:
    isa = chosen_isa(with_cuda=False)
    library = prebuilt_library(isa) or prebuilt_library()
    if library is None:
        status.messages.append("no prebuilt library next to the package")
        return False
    if library != prebuilt_library(isa):
        status.messages.append(f"no prebuilt {isa} library: loading the baseline one")
        isa = "baseline"
    refusal = prebuilt_refusal(library, PACKAGE_DIR / "_build_info.json")
    if refusal is not None:
        status.messages.append(refusal)
        return False
    torch.ops.load_library(str(library))
    status.source, status.path, status.isa = "prebuilt", str(library), isa
    return True


def _cuda_toolkit_usable() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    return bool(torch.version.cuda) and torch.cuda.is_available() and CUDA_HOME is not None


def sources_key(csrc: Path, sources: list[str], flags: list[str]) -> str:
    """A short hash of everything a build depends on besides torch: the sources' location (ninja's build
    file names them), the contents of every file under csrc/ (headers included) and the flags."""
    digest = hashlib.sha256(str(csrc.resolve()).encode())
    for path in sorted(p for p in csrc.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(csrc)).encode() + b"\0" + path.read_bytes())
    digest.update("\0".join([*sources, *flags]).encode())
    return digest.hexdigest()[:16]


def cache_dir(key: str = "") -> Path:
    """Where kernels compiled on first use live: per torch build, then per version of the sources."""
    base = settings.cache_root() / torch_tag()
    return base / key if key else base


def _try_jit(status: KernelStatus) -> bool:
    csrc = sources_dir()
    if csrc is None:
        status.messages.append("the C++ sources are not installed with the package")
        return False
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        status.messages.append("no C++ compiler (c++) on PATH")
        return False
    from torch.utils import cpp_extension

    with_cuda = _cuda_toolkit_usable()
    isa = chosen_isa(with_cuda)
    sources = [str(csrc / s) for s in CPU_SOURCES]
    if with_cuda:
        sources += [str(csrc / s) for s in CUDA_SOURCES]
    defines = ["-DNDSNN_WITH_CUDA"] if with_cuda else []
    cxx_flags = [*CXX_FLAGS, *ISA_FLAGS[isa], *defines]
    flags = [*cxx_flags, *LINK_FLAGS, *(NVCC_FLAGS if with_cuda else ())]
    settings.check_cache_dir()  # an NDSNN_CACHE_DIR the user chose but cannot be used: SettingsError
    build_dir = cache_dir(sources_key(csrc, sources, flags))
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        status.messages.append(f"cannot create the kernel cache {build_dir} ({error.strerror or error})")
        return False
    name = "ndsnn_kernels_cuda" if with_cuda else "ndsnn_kernels" + ("" if isa == "baseline" else f"_{isa}")
    if not (build_dir / f"{name}.so").exists():
        print(
            f"ndsnn: compiling the {'C++/CUDA' if with_cuda else 'C++ (' + isa + ')'} kernels for {torch_tag()} into "
            f"{build_dir} (first use only, about a minute)",
            file=sys.stderr,
            flush=True,
        )
    try:
        cpp_extension.load(
            name=name,
            sources=sources,
            extra_cflags=cxx_flags,
            extra_ldflags=list(LINK_FLAGS),
            extra_cuda_cflags=[*NVCC_FLAGS, *defines],
            extra_include_paths=[str(csrc)],
            build_directory=str(build_dir),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=os.environ.get("NDSNN_VERBOSE_BUILD") == "1",
        )
    except Exception as error:  # a failed compile must not make the package unusable
        status.messages.append(f"compiling the kernels failed: {str(error).strip().splitlines()[-1]}")
        return False
    status.source, status.path, status.isa = "jit", str(build_dir / f"{name}.so"), isa
    return True


def load() -> KernelStatus:
    """Loads the kernels once per process and returns how; warns once if none could be loaded."""
    global _status
    if _status is not None:
        return _status
    status = KernelStatus()
    policy = settings.kernel_policy()  # SettingsError for a bad value, at every call until it is fixed
    if policy == "off":
        status.messages.append("NDSNN_KERNELS=off")
    else:
        loaded = policy in ("auto", "prebuilt") and _try_prebuilt(status)
        if not loaded and policy in ("auto", "jit"):
            _try_jit(status)
    if status.loaded:
        status.build_info = _parse_build_info(torch.ops.ndsnn.build_info())
        status.kernels = frozenset(
            (op, device)
            for op in OPS
            for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"ndsnn::{op}", key)
        )
    else:
        warnings.warn(
            "ndsnn: no compiled kernels could be used (" + "; ".join(status.messages) + "); every op runs its "
            "plain-PyTorch reference implementation, which is correct but slow.",
            RuntimeWarning,
            stacklevel=2,
        )
    _status = status
    return status


def load_at_import() -> KernelStatus:
    """load() for the ops modules' import-time registration: a bad NDSNN_KERNELS leaves nothing registered
    instead of failing the import (every later use of the kernels raises the SettingsError)."""
    try:
        return load()
    except settings.SettingsError:
        return KernelStatus()


def has_kernel(op: str, device_type: str) -> bool:
    """Whether the compiled library registered `ndsnn::op` for this device type ("cpu", "cuda")."""
    return (op, device_type) in load().kernels


_warned_fallbacks: set[tuple[str, str]] = set()


def kernel_unavailable(op: str, device: torch.device) -> str:
    """Why `op` runs no compiled kernel on `device` (for errors where the kernel was asked for)."""
    if not has_kernel(op, device.type):
        status = load()
        where = status.path if status.loaded else "no library: " + "; ".join(status.messages)
        return f"the compiled library has no {device.type} kernel for {op} ({where})"
    return (f"the {device.type} kernel for {op} has not passed its tests on {_verification.architecture(device)} "
            f"in this version; set {_verification.ENV_VAR}=1 to run it anyway")  # fmt: skip


def kernel_ready(op: str, device: torch.device) -> bool:
    """Whether `op` has a compiled kernel for `device` that may run there by default; quiet (for optional
    faster variants, which fall back to another compiled kernel rather than to the reference)."""
    return has_kernel(op, device.type) and _verification.allowed(op, device)


def use_kernel(op: str, device: torch.device) -> bool:
    """True if `op` has a compiled kernel for `device` whose tests have passed on this kind of device
    (ndsnn._verification); otherwise warns once per (op, device type)."""
    if has_kernel(op, device.type):
        if _verification.allowed(op, device):
            return True
        if (op, device.type) not in _warned_fallbacks:
            _warned_fallbacks.add((op, device.type))
            warnings.warn(
                f"ndsnn: the {device.type} kernel for {op} has not passed its tests on "
                f"{_verification.architecture(device)} in this version (no record in verified_kernels.json); "
                f"the op runs without it (the reference, or the unfused ops). {_verification.ENV_VAR}=1 uses it; "
                "benchmarks/gpu_suite.py --write-verified records it once its tests pass.",
                RuntimeWarning,
                stacklevel=3,
            )
        return False
    if load().loaded and (op, device.type) not in _warned_fallbacks:
        _warned_fallbacks.add((op, device.type))
        warnings.warn(
            f"ndsnn: the compiled library has no {device.type} kernel for {op}; using the reference "
            "implementation on that device.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False
