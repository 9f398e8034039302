"""What `ndsnn info` reports: versions, which kernels are compiled and where they came from, the devices."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from . import __version__, _extension, _verification


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, object]:
    status = _extension.load()
    devices = [f"cpu ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(
                f"cuda:{index} {props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
            )
    ops = sorted({op for op, _ in status.kernels})
    return {
        "ndsnn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU build)",
        "triton": _package_version("triton"),
        "spikingjelly": _package_version("spikingjelly"),
        "kernels": status.source if status.loaded else "none: reference implementations in use",
        "kernel library": status.path or "-",
        "cpu kernels built for": status.isa if status.loaded else "-",
        "built with": ", ".join(f"{k}={v}" for k, v in status.build_info.items()) or "-",
        "cpu kernels": ", ".join(op for op in ops if (op, "cpu") in status.kernels) or "none",
        "cuda kernels": ", ".join(op for op in ops if (op, "cuda") in status.kernels) or "none",
        "cuda kernels verified": _verified_kernels(),
        "triton kernels": _triton_kernels(),
        "notes": "; ".join(status.messages) or "-",
        "devices": "; ".join(devices),
    }


def _verified_kernels() -> str:
    """Each CUDA kernel and the GPU architectures its current sources passed their tests on."""
    parts = []
    for kernel, entry in _verification.summary().items():
        where = ", ".join(entry["verified_on"]) or "not yet on any GPU (its op runs the reference path on CUDA)"
        parts.append(f"{kernel}: {where}")
    trust = f" [{_verification.ENV_VAR}=1: all are used]" if _verification.trust_unverified() else ""
    return "; ".join(parts) + trust


def _triton_kernels() -> str:
    """The Triton kernels and where they would run here."""
    from .sparse import topk

    if topk.triton is None:
        return "none (triton not installed; grow top-k uses torch.topk)"
    where = "cuda" if torch.cuda.is_available() else "no GPU here: grow top-k uses torch.topk"
    return f"grow_topk digit histogram ({where})"


def format_info(info: dict[str, object]) -> str:
    width = max(len(key) for key in info)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in info.items())
