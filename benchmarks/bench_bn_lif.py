"""Batch norm + LIF forward+backward: the fused op vs batch norm followed by the LIF kernel, a plain PyTorch
time loop, or SpikingJelly's LIFNode.

For each VGG-16 (CIFAR, 32x32) batch-norm + LIF layer, T and dtype: the median fwd+bwd time in training mode,
the ratios measured side by side in this run, and the bytes autograd keeps for backward per neuron-step
(excluding the input, which the convolution before it produced). Writes benchmarks/results/bn_lif_<device>.json.

    python benchmarks/bench_bn_lif.py                  # CPU: batch 8, T = 4 and 8, float32 and bfloat16
    python benchmarks/bench_bn_lif.py --device cuda    # batch 128
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    environment,
    fwd_bwd_step,
    interleaved_medians,
    saved_bytes_per_neuron_step,
    write_results,
)

from ndsnn import _extension  # noqa: E402
from ndsnn.models.layers import DEFAULT_LIF  # noqa: E402
from ndsnn.nn import LIF, batch_norm_lif_fusion, batch_norm_then_lif  # noqa: E402
from ndsnn.ops import lif_reference  # noqa: E402

# (name, channels, height, width): the batch-norm + LIF layers of VGG-16 at 32x32 input.
VGG16_BN_LIF_LAYERS = (
    ("conv1-2 64x32x32", 64, 32, 32),
    ("conv3-4 128x16x16", 128, 16, 16),
    ("conv5-7 256x8x8", 256, 8, 8),
    ("conv8-10 512x4x4", 512, 4, 4),
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
Layer = Callable[[torch.Tensor], torch.Tensor]


def _frames(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return bn(x.flatten(0, 1)).view_as(x)


def _spikingjelly(bn: nn.Module) -> Layer | None:
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        return None
    node = neuron.LIFNode(tau=DEFAULT_LIF["tau"], v_threshold=DEFAULT_LIF["v_threshold"],
                          v_reset=DEFAULT_LIF["v_reset"], detach_reset=DEFAULT_LIF["detach_reset"],
                          surrogate_function=surrogate.ATan(), step_mode="m")  # fmt: skip

    def run(x: torch.Tensor) -> torch.Tensor:
        node.reset()
        return node(_frames(bn, x))

    return run


def implementations(channels: int, device: torch.device) -> dict[str, Layer]:
    """Fresh training-mode layers (each with its own batch norm, float32 parameters as under autocast)."""
    lif_options = dict(DEFAULT_LIF)

    def bn() -> nn.Module:
        return nn.BatchNorm2d(channels).to(device)

    fused_bn, fused_lif = bn(), LIF(**lif_options)
    unfused_bn, unfused_lif = bn(), LIF(**lif_options)
    loop_bn = bn()

    def fused(x: torch.Tensor) -> torch.Tensor:
        return batch_norm_then_lif(fused_bn, fused_lif, x)

    def unfused(x: torch.Tensor) -> torch.Tensor:
        with batch_norm_lif_fusion(False):
            return batch_norm_then_lif(unfused_bn, unfused_lif, x)

    def loop(x: torch.Tensor) -> torch.Tensor:
        return lif_reference(_frames(loop_bn, x), **lif_options)[0]

    impls = {"ndsnn fused": fused, "bn + ndsnn lif": unfused, "bn + torch loop": loop}
    sj = _spikingjelly(bn())
    if sj is not None:
        impls["bn + spikingjelly"] = sj
    return impls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="N (default 8 on CPU, 128 on CUDA)")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8], help="T values")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--out", default=None, help="results file name under benchmarks/results/")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible")
    batch = args.batch or (128 if device.type == "cuda" else 8)
    rows = []
    for name, channels, height, width in VGG16_BN_LIF_LAYERS:
        for steps in args.steps:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                x = (torch.randn(steps, batch, channels, height, width, device=device) * 1.5 + 0.5).to(dtype)
                impls = implementations(channels, device)
                times = interleaved_medians({k: fwd_bwd_step(f, x) for k, f in impls.items()}, device,
                                            args.min_run_time)  # fmt: skip
                saved = {k: saved_bytes_per_neuron_step(f, x) for k, f in impls.items()}
                fused = times["ndsnn fused"]
                row = {"layer": name, "shape": list(x.shape), "dtype": dtype_name,
                       "ms": {k: v * 1e3 for k, v in times.items()},
                       "fused_speedup": {k: v / fused for k, v in times.items() if k != "ndsnn fused"},
                       "saved_bytes_per_neuron_step": saved}  # fmt: skip
                rows.append(row)
                print(f"{name:18s} T={steps} {dtype_name:8s} fused {fused * 1e3:7.2f} ms | "
                      + " | ".join(f"{k} {v:.2f}x" for k, v in row["fused_speedup"].items())
                      + " | saved B/neuron-step " + ", ".join(f"{k} {v:.1f}" for k, v in saved.items()),
                      flush=True)  # fmt: skip
    settings = {"batch": batch, "steps": args.steps, "dtypes": args.dtypes, "mode": "training (batch statistics)",
                "fused_kernel_ran": _extension.kernel_ready("batch_norm_lif_forward", device),
                "lif": DEFAULT_LIF, "bn_parameters": "float32", "min_run_time": args.min_run_time,
                "timed": "forward + backward (ones as the upstream gradient), median of interleaved runs"}  # fmt: skip
    path = write_results(args.out or f"bn_lif_{device.type}.json",
                         {"benchmark": "bench_bn_lif", "environment": environment(device), "settings": settings,
                          "results": rows})  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
