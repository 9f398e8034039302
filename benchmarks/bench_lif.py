"""Fused LIF forward+backward: ndsnn vs a plain PyTorch time loop vs SpikingJelly's LIFNode (multi-step).

For each VGG-16 (CIFAR, 32x32) LIF layer shape, T and dtype: the median fwd+bwd time, the ratios measured
side by side in this run, and the bytes autograd keeps for backward per neuron-step. On CUDA also the
achieved bandwidth against a measured device copy. Writes benchmarks/results/lif_<device>.json.

    python benchmarks/bench_lif.py                     # CPU, full grid
    python benchmarks/bench_lif.py --quick             # one layer, T=8, float32 (about 20 s)
    python benchmarks/bench_lif.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    environment,
    fwd_bwd_step,
    interleaved_medians,
    saved_bytes_per_neuron_step,
    write_results,
)

import ndsnn  # noqa: E402
from ndsnn import _extension  # noqa: E402

# (name, channels, height, width): LIF layers of VGG-16 at 32x32 input.
VGG16_LIF_LAYERS = (
    ("conv1-2 64x32x32", 64, 32, 32),
    ("conv3-4 128x16x16", 128, 16, 16),
    ("conv5-7 256x8x8", 256, 8, 8),
    ("conv8-10 512x4x4", 512, 4, 4),
    ("fc 4096", 4096, 1, 1),
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Impl:
    name: str
    make: Callable[[], Callable[[torch.Tensor], torch.Tensor]]  # a fresh callable x_seq -> spikes
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)


def _spikingjelly_impl() -> Impl | None:
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        return None

    def make() -> Callable[[torch.Tensor], torch.Tensor]:
        node = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")

        def run(x: torch.Tensor) -> torch.Tensor:
            node.reset()
            return node(x)

        return run

    return Impl("spikingjelly", make)


def _compiled_pair(forward: str) -> Callable[[], Callable[[torch.Tensor], torch.Tensor]]:
    """One compiled LIF kernel pair called directly (autograd included), whatever the op would choose."""
    op = getattr(torch.ops.ndsnn, forward)
    return lambda: lambda x: op(x, None, None, 2.0, 1.0, 0.0, True, False, "atan", 2.0, None)[0]


def implementations(device: torch.device) -> list[Impl]:
    impls = [
        Impl("ndsnn", lambda: lambda x: ndsnn.ops.lif(x)),
        Impl(
            "ndsnn fp16-saved",
            lambda: lambda x: ndsnn.ops.lif(x, saved_dtype=torch.float16),
            dtypes=(torch.float32,),
        ),
        Impl("torch loop", lambda: lambda x: ndsnn.ops.lif_reference(x)[0]),
    ]
    if device.type == "cuda":  # both CUDA kernel pairs, verified on this GPU or not (the row says which)
        for label, forward in (("ndsnn general kernel", "lif_forward"), ("ndsnn roofline kernel", "lif_forward_fast")):
            if _extension.has_kernel(forward, "cuda"):
                impls.append(Impl(label, _compiled_pair(forward), dtypes=(torch.float32, torch.bfloat16)))
    sj = _spikingjelly_impl()
    if sj is not None:
        impls.append(sj)
    return impls


def _chosen_kernel(device: torch.device) -> str:
    """Which kernel the "ndsnn" rows ran (ndsnn.ops.lif picks the roofline one where it is verified)."""
    if _extension.kernel_ready("lif_forward_fast", device) and device.type == "cuda":
        return "lif_forward_fast"
    return "lif_forward" if _extension.kernel_ready("lif_forward", device) else "reference"


def copy_bandwidth(device: torch.device, nbytes: int, min_run_time: float) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = interleaved_medians({"copy": lambda: dst.copy_(src)}, device, min_run_time)["copy"]
    return 2 * nbytes / seconds / 1e9


def lif_traffic_bytes(x: torch.Tensor, saved_element_size: int) -> int:
    """Minimum global memory traffic of fused fwd+bwd: x, spikes, h out; grad_spikes, h, grad_x."""
    n = x.numel()
    return n * (4 * x.element_size() + 2 * saved_element_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="N (default 8 on CPU, 128 on CUDA)")
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8, 16], help="T values")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="first layer, T=8, float32 only")
    parser.add_argument("--out", default=None, help="results file name under benchmarks/results/")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    batch = args.batch or (128 if device.type == "cuda" else 8)
    layers = VGG16_LIF_LAYERS[:1] if args.quick else VGG16_LIF_LAYERS
    steps = [8] if args.quick else args.steps
    dtypes = ["float32"] if args.quick else args.dtypes
    impls = implementations(device)
    bandwidth = copy_bandwidth(device, 1 << 28, args.min_run_time) if device.type == "cuda" else None

    rows = []
    print(f"device={device} batch={batch} threads={torch.get_num_threads()} kernels={ndsnn.kernel_status().source}")
    header = f"{'layer':<20} {'T':>3} {'dtype':<9} {'impl':<17} {'fwd+bwd ms':>11} {'saved B/n-step':>15}"
    print(header + "  ratios")
    for layer, channels, height, width in layers:
        for t in steps:
            for dtype_name in dtypes:
                dtype = DTYPES[dtype_name]
                torch.manual_seed(0)
                x = (torch.randn(t, batch, channels, height, width, device=device) + 0.5).to(dtype)
                chosen = {impl.name: impl.make() for impl in impls if dtype in impl.dtypes}
                medians = interleaved_medians(
                    {name: fwd_bwd_step(fn, x) for name, fn in chosen.items()}, device, args.min_run_time
                )
                timings = {
                    name: {
                        "fwd_bwd_ms": medians[name] * 1e3,
                        "saved_bytes_per_neuron_step": saved_bytes_per_neuron_step(fn, x),
                    }
                    for name, fn in chosen.items()
                }
                base = timings["ndsnn"]["fwd_bwd_ms"]
                for name, figures in timings.items():
                    row = {"layer": layer, "T": t, "N": batch, "dtype": dtype_name, "impl": name, **figures}
                    row["neurons"] = batch * channels * height * width
                    row["speedup_of_ndsnn"] = figures["fwd_bwd_ms"] / base
                    if bandwidth is not None and name.startswith("ndsnn"):  # saved h: x's dtype or fp16
                        saved_size = 2 if "fp16" in name else x.element_size()
                        achieved = lif_traffic_bytes(x, saved_size) / (figures["fwd_bwd_ms"] / 1e3) / 1e9
                        row["achieved_GBps"] = achieved
                        row["fraction_of_copy_bandwidth"] = achieved / bandwidth
                    rows.append(row)
                    ratio = "" if name == "ndsnn" else f"  ndsnn is {row['speedup_of_ndsnn']:.2f}x faster"
                    print(f"{layer:<20} {t:>3} {dtype_name:<9} {name:<17} {figures['fwd_bwd_ms']:>11.3f} "
                          f"{figures['saved_bytes_per_neuron_step']:>15.2f}{ratio}")  # fmt: skip

    settings = {
        "batch": batch,
        "steps": steps,
        "dtypes": dtypes,
        "layers": [layer[0] for layer in layers],
        "min_run_time_s": args.min_run_time,
        "lif": "tau=2, v_threshold=1, v_reset=0, decay_input, atan surrogate",
        "input": "randn + 0.5",
        "copy_bandwidth_GBps": bandwidth,
        "ndsnn_kernel": _chosen_kernel(device),
    }
    payload = {"benchmark": "bench_lif", "environment": environment(device), "settings": settings, "results": rows}
    name = args.out or f"lif_{device.type}{'_quick' if args.quick else ''}.json"
    print(f"wrote {write_results(name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
