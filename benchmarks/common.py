"""Helpers shared by the benchmark scripts: environment record, timing, saved-tensor accounting, output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def git_commit() -> str:
    """The commit measured: git's, or NDSNN_COMMIT where the tree was copied without its history (a GPU
    machine that gets the working tree only)."""
    if os.environ.get("NDSNN_COMMIT"):
        return os.environ["NDSNN_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent)  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: torch.device) -> dict[str, object]:
    """Everything needed to interpret a figure: device, versions, flags."""
    import ndsnn
    from ndsnn import cpu_allocator

    env: dict[str, object] = {
        "device": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ndsnn": ndsnn.__version__,
        "ndsnn_kernels": ndsnn.kernel_status().source,
        "ndsnn_cpu_isa": ndsnn.kernel_status().isa,
        "commit": git_commit(),
        "cpu_allocator": cpu_allocator.state(),
    }
    try:
        from importlib.metadata import version

        import spikingjelly  # noqa: F401

        env["spikingjelly"] = version("spikingjelly")
    except ImportError:
        env["spikingjelly"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device=props.name,
            cuda=torch.version.cuda,
            driver=_nvidia_driver(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        env["cpu_model"] = _cpu_model()
        env.update(_cpu_identity())
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _cpu_identity() -> dict[str, str]:
    """Family, model, stepping and cache of the first CPU, and the widest vector ISA torch's own kernels use:
    "AMD EPYC" alone names several generations, whose dense (mkldnn) speeds differ by up to 2x."""
    identity = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    keys = {"cpu family": "cpu_family", "model": "cpu_model_number", "stepping": "cpu_stepping",
            "cache size": "cpu_cache"}  # fmt: skip
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            name, _, value = line.partition(":")
            if name.strip() in keys:
                identity[keys[name.strip()]] = value.strip()
    except OSError:
        pass
    return identity


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], device: torch.device, min_run_time: float, min_rounds: int = 5
) -> dict[str, float]:
    """Median seconds per call of each fn, timed in turns (A B C, B C A, C A B, ...) so that drift in the
    machine's speed, and what the previous call left in the caches, affect all of them alike; runs until every
    fn had min_run_time in total and min_rounds calls."""
    for fn in fns.values():  # warm-up: caches, autotuning, lazy initialisation
        fn()
    _synchronize(device)
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    turn = 0
    while min(len(v) for v in samples.values()) < min_rounds or min(sum(v) for v in samples.values()) < min_run_time:
        order = names[turn % len(names) :] + names[: turn % len(names)]
        turn += 1
        for name in order:
            fn = fns[name]
            start = time.perf_counter()
            fn()
            _synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


class SavedTensorBytes:
    """Counts the bytes autograd keeps for backward (unique storages, excluding the given tensors)."""

    def __init__(self, exclude: tuple[torch.Tensor, ...] = ()) -> None:
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.exclude and tensor.device.type != "meta":
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def fwd_bwd_step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of fn on a leaf copy of x, ones (of the output's shape) as the upstream gradient."""
    x = x.detach().requires_grad_()
    grads: list[torch.Tensor] = []

    def step() -> None:
        x.grad = None
        out = fn(x)
        if not grads or grads[0].shape != out.shape:
            grads[:] = [torch.ones_like(out)]
        out.backward(grads[0])

    return step


def saved_bytes_per_neuron_step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    """Bytes autograd keeps for fn's backward per element of x, not counting x itself."""
    x = x.detach().requires_grad_()
    counter = SavedTensorBytes(exclude=(x,))
    with counter.hooks():
        out = fn(x)
    del out
    return counter.total / x.numel()


def write_results(name: str, payload: dict[str, object]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
