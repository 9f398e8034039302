"""Masked sparse convolution: ndsnn's compiled sparse kernel vs the dense convolution on weight * mask.

First version: one layer shape (default 256->256, 3x3, 8x8, N=64, spike input at 10% rate), forward and
forward+backward at several sparsities, ratios measured side by side, and the crossover density (the
densest mask at which the sparse kernel is not slower). Writes benchmarks/results/sparse_conv_<device>.json.

    python benchmarks/bench_sparse_conv.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, interleaved_medians, write_results  # noqa: E402

import ndsnn  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)


def _step_factory(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor):
    """run(implementation, backward) -> a callable doing one forward (and backward) step."""
    x_leaf, w_leaf = x.clone().requires_grad_(), weight.clone().requires_grad_()

    def run(implementation: str, backward: bool):
        def step() -> None:
            out = ndsnn.ops.sparse_conv2d(x_leaf, w_leaf, mask, None, 1, 1, implementation=implementation)
            if backward:
                out.sum().backward()

        return step

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, nargs=2, default=[256, 256], metavar=("C_IN", "C_OUT"))
    parser.add_argument("--size", type=int, default=8, help="input height = width")
    parser.add_argument("--spike-rate", type=float, default=0.1, help="fraction of ones; 0 for real inputs")
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--min-run-time", type=float, default=0.5)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    c_in, c_out = args.channels
    shape = (args.batch, c_in, args.size, args.size)
    x = (torch.rand(shape, device=device) < args.spike_rate).float() if args.spike_rate else torch.randn(shape)
    weight = torch.randn(c_out, c_in, 3, 3, device=device)
    rows = []
    print(f"device={device} x={list(shape)} weight={list(weight.shape)} spike_rate={args.spike_rate}")
    for sparsity in args.sparsities:
        mask = torch.rand(weight.shape, device=device) >= sparsity
        run = _step_factory(x, weight, mask)
        with torch.no_grad():
            fwd = interleaved_medians(
                {"dense": run("dense", False), "sparse": run("sparse", False)}, device, args.min_run_time, 3
            )
        fwd_bwd = interleaved_medians(
            {"dense": run("dense", True), "sparse": run("sparse", True)}, device, args.min_run_time, 3
        )
        row = {
            "sparsity": sparsity,
            "density": mask.float().mean().item(),
            "fwd_ms": {k: v * 1e3 for k, v in fwd.items()},
            "fwd_bwd_ms": {k: v * 1e3 for k, v in fwd_bwd.items()},
            "fwd_speedup": fwd["dense"] / fwd["sparse"],
            "fwd_bwd_speedup": fwd_bwd["dense"] / fwd_bwd["sparse"],
        }
        rows.append(row)
        print(f"sparsity {sparsity:6.3f}: fwd dense {row['fwd_ms']['dense']:8.2f} ms sparse "
              f"{row['fwd_ms']['sparse']:8.2f} ms ({row['fwd_speedup']:.2f}x) | fwd+bwd dense "
              f"{row['fwd_bwd_ms']['dense']:8.2f} ms sparse {row['fwd_bwd_ms']['sparse']:8.2f} ms "
              f"({row['fwd_bwd_speedup']:.2f}x)")  # fmt: skip
    not_slower = [r["density"] for r in rows if r["fwd_bwd_speedup"] >= 1.0]
    crossover = max(not_slower) if not_slower else None
    print(f"crossover density (fwd+bwd, sparse not slower): {crossover}")
    settings = {
        "x": list(shape),
        "weight": list(weight.shape),
        "stride": 1,
        "padding": 1,
        "spike_rate": args.spike_rate,
        "dtype": "float32",
        "dense": "F.conv2d on weight * mask (mkldnn on CPU, cuDNN on CUDA)",
        "min_run_time_s": args.min_run_time,
    }
    payload = {
        "benchmark": "bench_sparse_conv",
        "environment": environment(device),
        "settings": settings,
        "results": rows,
        "crossover_density_fwd_bwd": crossover,
    }
    print(f"wrote {write_results(f'sparse_conv_{device.type}.json', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
