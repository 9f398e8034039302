"""The choice between a layer's sparse kernels and the dense op, measured on this machine for this layer.

The first time a layer configuration is seen (device, dtype, shapes, stride / padding / dilation / groups,
which gradients are needed, spike or real-valued input, and the mask's density rounded to a quarter octave),
its forward + backward is timed both ways on synthetic data of the same shapes and kind, with the real mask,
and the faster wins (the sparse kernels only when at least MARGIN times faster: timing noise must not
send a layer to a kernel that is merely level). Decisions are kept for the process and on disk, one file per
machine and kernel build (under the kernel cache, written atomically, ignored with a warning when corrupt),
so later runs on the same machine time nothing, in the spirit of cudnn.benchmark.

Above half density nothing is timed: the dense op serves (no measured layer's crossover is above 20%).
Density only moves the sparse kernels' time, in one direction: where they won at some density they win at
every lower one, and where dense won they lose at every higher one; a new density bucket (a mask that
changes, as NDSNN's does) is decided from the neighbours without timing whenever they settle it. Where dense
won at a higher density, the sparse time measured there, scaled down in proportion to the density (their
work is proportional to the kept weights plus fixed costs, so this is optimistic for them), says whether
the new bucket can be close: if even that estimate loses by more than FAR_FROM_CROSSOVER, dense is chosen
untimed. So a density schedule times only the buckets near each layer's crossover.

NDSNN_DISPATCH=table (or `ndsnn train --deterministic`) decides from the crossover table shipped with the
package instead (ndsnn.ops.crossover): no timing, the same choice on every run and machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import _extension, settings

MARGIN = 1.1  # the sparse kernels run only where at least this much faster than dense
# A bucket is left untimed (dense) when the sparse time of a denser timed bucket, scaled in proportion to the
# density, would still be this many times slower than MARGIN allows.
FAR_FROM_CROSSOVER = 1.5
# Above this density the sparse kernels are not timed: dense wins (no layer of the crossover tables, on any
# device, has its crossover above 20%), and a first-sight timing on a noisy machine must not say otherwise.
MAX_SPARSE_DENSITY = 0.5
FORMAT = 1
_decisions: dict[str, bool] = {}
_timings: dict[str, tuple[float, float]] = {}  # (sparse, dense) seconds of the timed decisions
_memo: dict[LayerCall, bool] = {}  # the same decisions by call, without building the key string
_loaded_from: Path | None = None


@dataclass(frozen=True)
class LayerCall:
    """What the decision depends on, for one call of a layer."""

    op: str  # "conv2d" or "linear"
    device: str
    dtype: str
    x_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    geometry: tuple  # stride, padding, dilation, groups (conv); () for linear
    grads: tuple[bool, bool]  # input gradient, weight gradient needed
    spikes: bool
    bucket: int  # the density, in quarter octaves below 1

    def key(self) -> str:
        return json.dumps([self.op, self.device, self.dtype, self.x_shape, self.weight_shape, self.geometry,
                           self.grads, self.spikes, self.bucket])  # fmt: skip

    def neighbour(self, bucket: int) -> str:
        return LayerCall(self.op, self.device, self.dtype, self.x_shape, self.weight_shape, self.geometry, self.grads,
                         self.spikes, bucket).key()  # fmt: skip


def density_bucket(density: float) -> int:
    """Quarter octaves below density 1 (0 for a full mask); a mask with no kept weight is bucket 10**6."""
    return 10**6 if density <= 0 else int(math.floor(-math.log2(density) * 4))


_MAX_SPARSE_BUCKET = density_bucket(MAX_SPARSE_DENSITY)  # buckets below this are denser: dense, untimed


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{torch.get_num_threads()}threads"


_forced_policy: str | None = None


def force_policy(value: str | None) -> None:
    """Decide by `value` ("measure" or "table") whatever NDSNN_DISPATCH says; None: as NDSNN_DISPATCH says."""
    global _forced_policy
    if value not in (None, "measure", "table"):
        raise ValueError(f"policy must be measure, table or None; got {value!r}")
    _forced_policy = value
    _forget_dense_calls()


def policy() -> str:
    if _forced_policy is not None:
        return _forced_policy
    value = os.environ.get("NDSNN_DISPATCH", "measure").strip().lower() or "measure"
    if value not in ("measure", "table"):
        raise settings.SettingsError(f"NDSNN_DISPATCH must be measure or table; got {value!r}")
    return value


def cache_file() -> Path:
    """The decisions of this machine and kernel build."""
    identity = json.dumps([platform.processor() or platform.machine(), os.cpu_count(), torch.__version__,
                           _extension.load().path, _library_stamp()])  # fmt: skip
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return settings.cache_root() / "dispatch" / f"{digest}.json"


def _library_stamp() -> str:
    path = _extension.load().path
    try:
        stat = os.stat(path) if path else None
    except OSError:
        stat = None
    return f"{stat.st_size}-{int(stat.st_mtime)}" if stat else "-"


def _load_disk() -> None:
    global _loaded_from
    path = cache_file()
    if _loaded_from == path:
        return
    _loaded_from = path
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") != FORMAT or not isinstance(payload.get("decisions"), dict):
            raise ValueError("unknown format")
        for key, value in payload["decisions"].items():
            _decisions.setdefault(key, bool(value))
        for key, value in payload.get("timings", {}).items():
            sparse_s, dense_s = (float(v) for v in value)
            _timings.setdefault(key, (sparse_s, dense_s))
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError) as error:
        warnings.warn(f"ndsnn: ignoring the dispatch cache {path} ({error}); decisions are measured again",
                      RuntimeWarning, stacklevel=3)  # fmt: skip


def _save_disk() -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"format": FORMAT, "decisions": dict(sorted(_decisions.items())),
                       "timings": {key: list(value) for key, value in sorted(_timings.items())}}, handle)  # fmt: skip
        os.replace(temporary, path)
    except OSError:  # a read-only cache: decisions stay in the process
        return


def snapshot() -> dict[str, bool]:
    """Every decision made or loaded so far (a checkpoint keeps them: a resumed run takes the same kernels)."""
    return dict(_decisions)


def preload(decisions: dict[str, bool]) -> None:
    """Decisions to use as they are (from a checkpoint), before any measuring."""
    _decisions.update({str(k): bool(v) for k, v in decisions.items()})
    _memo.clear()
    _forget_dense_calls()


def clear() -> None:
    """Forget every decision of this process (the disk cache is read again on the next one)."""
    global _loaded_from
    _decisions.clear()
    _timings.clear()
    _memo.clear()
    _loaded_from = None
    _forget_dense_calls()


# -- eager calls known to take the dense path ------------------------------------------------------------
# A layer that runs dense pays only the dense op: its later eager calls skip the planning (kernel checks,
# the decision's key, the kept count), which costs a small layer 10-15% of its time. Remembered on the mask
# tensor by what the decision depends on that a call can read without a pass over data; the mask's identity
# and version counter stand for its density, as in kept_index.kept_count.
_DENSE_ATTRIBUTE = "_ndsnn_dense_calls"
_generation = 0  # moves on whenever decisions or the policy change: every remembered call is forgotten


def _forget_dense_calls() -> None:
    global _generation
    _generation += 1


def eager_call(x: torch.Tensor, weight: torch.Tensor, geometry: tuple, implementation: str,
               spike_input: bool | None) -> tuple | None:  # fmt: skip
    """The key of an eager call by which a dense decision is remembered, or None where the call's choice
    depends on more than its key (spike_input not given: x's values say whether it is spikes)."""
    if implementation != "auto" or spike_input is None:
        return None
    return (x.shape, x.dtype, x.device, weight.shape, geometry, spike_input, x.requires_grad, weight.requires_grad,
            torch.is_grad_enabled(), torch.get_num_threads(), _forced_policy, os.environ.get("NDSNN_DISPATCH"),
            _generation)  # fmt: skip


def known_dense(mask: torch.Tensor, call: tuple | None) -> bool:
    """Whether this call, with the mask as it is (same tensor, same version), was planned dense before."""
    if call is None:
        return False
    seen = getattr(mask, _DENSE_ATTRIBUTE, None)
    return seen is not None and seen.get(call) == (mask.data_ptr(), mask._version)


def remember_dense(mask: torch.Tensor, call: tuple | None) -> None:
    if call is None:
        return
    seen = getattr(mask, _DENSE_ATTRIBUTE, None)
    if seen is None or len(seen) > 64:  # a layer sees few configurations; bound it anyway
        seen = {}
        setattr(mask, _DENSE_ATTRIBUTE, seen)
    seen[call] = (mask.data_ptr(), mask._version)


def inferred(call: LayerCall) -> bool | None:
    """A decision implied by those at other densities of the same layer (or None)."""
    known = [(int(json.loads(key)[-1]), value) for key, value in _decisions.items()
             if key.startswith(call.key()[: call.key().rindex(",")])]  # fmt: skip
    if any(value and bucket <= call.bucket for bucket, value in known):  # sparse won at a higher density
        return True
    if any(not value and bucket >= call.bucket for bucket, value in known):  # dense won at a lower density
        return False
    if far_from_crossover(call):
        return False
    return None


def bucket_density(bucket: int) -> float:
    """The highest density of a bucket (density_bucket's inverse)."""
    return 2.0 ** (-bucket / 4)


def far_from_crossover(call: LayerCall) -> bool:
    """Whether a denser bucket of the same layer was timed with dense winning by so much that the sparse time
    there, scaled down in proportion to the density, still loses here by FAR_FROM_CROSSOVER."""
    prefix = call.key()[: call.key().rindex(",")]
    for key, (sparse_s, dense_s) in _timings.items():
        if not key.startswith(prefix):
            continue
        bucket = int(json.loads(key)[-1])
        if bucket < call.bucket:
            # the lowest density of this bucket against the highest of the timed one: the estimate's best case
            scaled = sparse_s * bucket_density(call.bucket + 1) / bucket_density(bucket)
            if scaled * MARGIN > dense_s * FAR_FROM_CROSSOVER:
                return True
    return False


Timers = tuple[Callable[[], None], Callable[[], None]]


def decide(call: LayerCall, timers: Callable[[], Timers], prior: Callable[[], bool], device: torch.device) -> bool:
    """Whether the sparse kernels serve this call: dense above MAX_SPARSE_DENSITY, else from the process's
    decisions, the disk cache, the neighbouring densities, or (first sight) timings of both (`timers` makes
    the (sparse, dense) steps, only then); `prior` where measuring is off."""
    if call.bucket < _MAX_SPARSE_BUCKET:
        return False
    memo = _memo.get(call)
    if memo is not None:
        return memo
    key = call.key()
    if key in _decisions:
        _memo[call] = _decisions[key]
        return _decisions[key]
    if policy() == "table" or torch.compiler.is_compiling():
        return prior()
    _load_disk()
    if key in _decisions:
        return _decisions[key]
    choice = inferred(call)
    if choice is None:
        sparse_s, dense_s = _time_both(*timers(), device)
        choice = sparse_s * MARGIN <= dense_s
        _timings[key] = (sparse_s, dense_s)
    _decisions[key] = _memo[call] = choice
    _save_disk()
    return choice


def _time_both(time_sparse: Callable[[], None], time_dense: Callable[[], None], device: torch.device,
               budget_s: float = 0.1) -> tuple[float, float]:  # fmt: skip
    """The fastest of each one's runs, in turns after two warm-ups each: at least 5 rounds, up to 25 while under
    budget. The minimum, not the median: on a shared machine noise only ever adds time."""

    def once(fn: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(2):
        once(time_sparse), once(time_dense)
    samples: tuple[list[float], list[float]] = ([], [])
    started = time.perf_counter()
    while len(samples[0]) < 5 or (time.perf_counter() - started < budget_s and len(samples[0]) < 25):
        samples[0].append(once(time_sparse))
        samples[1].append(once(time_dense))
    return min(samples[0]), min(samples[1])


def autograd_usable() -> bool:
    """Whether a timed step may run forward + backward through autograd here (not inside a compiled op's
    body, where autograd is switched off below the op)."""
    return torch.is_grad_enabled() and not torch._C._dispatch_tls_is_dispatch_key_excluded(
        torch._C.DispatchKey.AutogradCPU
    )


def autograd_steps(run: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor], x_syn: torch.Tensor,
                   weight: torch.Tensor, grads: tuple[bool, bool]) -> Timers:  # fmt: skip
    """(sparse, dense) steps that are the layer's real forward + backward through autograd, as training runs
    them (its Python and autograd costs included, which decide small layers): run(x, weight, implementation)."""
    x_leaf = x_syn.detach().requires_grad_(grads[0])
    w_leaf = weight.detach().requires_grad_(grads[1])
    upstream: list[torch.Tensor] = []

    def step(implementation: str) -> None:
        x_leaf.grad = w_leaf.grad = None
        out = run(x_leaf, w_leaf, implementation)
        if not upstream:
            upstream.append(torch.ones_like(out))
        out.backward(upstream[0])

    return (lambda: step("sparse")), (lambda: step("dense"))


def synthetic_input(x: torch.Tensor, spikes: bool) -> torch.Tensor:
    """Data of x's shape and kind for timing: spikes at x's firing rate (at least 5%), or normal values."""
    generator = torch.Generator(device=x.device).manual_seed(0)
    if spikes:
        rate = max(0.05, float(torch.count_nonzero(x)) / max(1, x.numel()))
        return (torch.rand(x.shape, generator=generator, device=x.device) < rate).to(x.dtype)
    return torch.randn(x.shape, generator=generator, device=x.device).to(x.dtype)
