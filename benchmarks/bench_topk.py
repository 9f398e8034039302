"""The grow step's selection for a whole model: ndsnn.sparse.grow_topk (one radix select for all layers:
Triton histogram on GPU, torch.bincount otherwise) vs a per-layer torch.topk loop, on the weight shapes of
VGG-16 and ResNet-19 at 90% and 99% sparsity, growing 30% of each layer's kept count (RigL's first update).

    python benchmarks/bench_topk.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, interleaved_medians, write_results  # noqa: E402
from conv_layers import RESNET19, VGG16  # noqa: E402

from ndsnn.sparse.topk import grow_topk, grow_topk_reference  # noqa: E402


def model_shapes(layers) -> list[tuple[int, ...]]:
    """Every conv weight of the model (repeated layers repeated) plus a 10-class classifier."""
    shapes = [(l.out_channels, l.in_channels, l.kernel, l.kernel) for l in layers for _ in range(l.count)]  # noqa: E741
    return [*shapes, (10, layers[-1].out_channels)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--output", help="results file (default topk_<device>.json under benchmarks/results/)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    implementation = "triton" if device.type == "cuda" else "torch"  # the radix select, against the loop
    rows = []
    for model, layers in (("vgg16", VGG16), ("resnet19", RESNET19)):
        shapes = model_shapes(layers)
        for sparsity in (0.9, 0.99):
            torch.manual_seed(0)
            scores = [torch.randn(s, device=device).abs() for s in shapes]
            candidates = [torch.rand(s, device=device) >= 1 - sparsity for s in shapes]  # the pruned positions
            counts = [round(0.3 * (1 - sparsity) * torch.Size(s).numel()) for s in shapes]
            args_ = (scores, candidates, counts)
            times = interleaved_medians(
                {
                    "grow_topk": lambda a=args_: grow_topk(*a, implementation=implementation),
                    "topk_loop": lambda a=args_: grow_topk_reference(*a),
                },
                device,
                args.min_run_time,
            )
            ms = {k: v * 1e3 for k, v in times.items()}
            speedup = times["topk_loop"] / times["grow_topk"]
            rows.append({"model": model, "sparsity": sparsity, "layers": len(shapes), "ms": ms, "speedup": speedup})
            print(
                f"{model:9s} sparsity {sparsity:.2f} ({len(shapes)} layers): grow_topk {ms['grow_topk']:8.2f} ms"
                f" | per-layer topk {ms['topk_loop']:8.2f} ms | {speedup:.2f}x"
            )
    payload = {
        "benchmark": "bench_topk",
        "environment": environment(device),
        "settings": {"implementation": implementation, "grow_fraction_of_kept": 0.3, "scores": "|N(0,1)|"},
        "results": rows,
    }
    print(f"wrote {write_results(args.output or f'topk_{device.type}.json', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
