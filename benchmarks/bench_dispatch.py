"""The measured dispatch against the dense layer, over every conv and linear layer of the convnet, VGG-16 and
ResNet-19 and more shapes (wide and narrow linears, 1x1 and 5x5 convolutions, stride 2, 1-3 input channels),
at sparsities 0-99.5%, with spike and real inputs: forward + backward of `implementation="auto"` against the
dense op (mkldnn / cuDNN on weight * mask), timed side by side in one run, after auto made its decision
(measured on this machine, in a fresh dispatch cache). The target: auto at least 0.95x dense everywhere.

    python benchmarks/bench_dispatch.py                 # CPU, every shape
    python benchmarks/bench_dispatch.py --quick         # a few shapes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, fwd_bwd_step, interleaved_medians, write_results  # noqa: E402
from conv_layers import LAYERS  # noqa: E402

SPARSITIES = (0.0, 0.5, 0.9, 0.95, 0.99, 0.995)


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "conv" or "linear"
    in_features: int  # channels for a conv
    out_features: int
    batch: int  # N * T
    size: int = 1  # input height = width (conv)
    kernel: int = 1
    stride: int = 1
    padding: int = 0


def layers(batch: int) -> list[Layer]:
    """Every layer shape of the three models at the batch their CPU benchmarks use, and more shapes."""
    out = [Layer(layer.key, "conv", layer.in_channels, layer.out_channels, batch, layer.size, layer.kernel,
                 layer.stride, layer.padding) for layer in LAYERS]  # fmt: skip
    out += [
        Layer("convnet/conv1 (28x28)", "conv", 1, 32, 128, 28, 3, 1, 1),
        Layer("convnet/conv2 (14x14)", "conv", 32, 64, 128, 14, 3, 1, 1),
        Layer("convnet/conv1 (8x8)", "conv", 1, 32, 256, 8, 3, 1, 1),
        Layer("convnet/fc1 (28x28)", "linear", 3136, 128, 512),
        Layer("convnet/fc2", "linear", 128, 10, 512),
        Layer("convnet/fc1 (8x8)", "linear", 256, 128, 256),
        Layer("vgg16/classifier", "linear", 512, 10, batch),
        Layer("resnet19/fc1", "linear", 512, 256, batch),
        Layer("resnet19/fc2", "linear", 256, 10, batch),
        Layer("other/linear 4096->4096", "linear", 4096, 4096, 64),
        Layer("other/linear 10000->100", "linear", 10000, 100, 128),
        Layer("other/linear 64->1000", "linear", 64, 1000, 256),
        Layer("other/linear 784->512", "linear", 784, 512, 256),
        Layer("other/conv 1x1 256->512 8x8", "conv", 256, 512, batch, 8, 1, 1, 0),
        Layer("other/conv 5x5 32->64 16x16", "conv", 32, 64, batch, 16, 5, 1, 2),
        Layer("other/conv 3x3 s2 64->128 32x32", "conv", 64, 128, batch, 32, 3, 2, 1),
        Layer("other/conv 3x3 1->16 28x28", "conv", 1, 16, 64, 28, 3, 1, 1),
        Layer("other/conv 7x7 s2 3->64 32x32", "conv", 3, 64, batch, 32, 7, 2, 3),
        Layer("other/conv 3x3 2->32 16x16", "conv", 2, 32, 64, 16, 3, 1, 1),
    ]
    return out


def step(layer: Layer, implementation: str, spikes: bool, sparsity: float, device: torch.device):
    """A forward + backward of the layer by the op (`implementation`), with its own weight and mask."""
    import ndsnn

    g = torch.Generator().manual_seed(0)
    if layer.kind == "conv":
        shape = (layer.batch, layer.in_features, layer.size, layer.size)
        weight = torch.randn(layer.out_features, layer.in_features, layer.kernel, layer.kernel, generator=g)
    else:
        shape = (layer.batch, layer.in_features)
        weight = torch.randn(layer.out_features, layer.in_features, generator=g)
    x = (torch.rand(shape, generator=g) < 0.15).float() if spikes else torch.randn(shape, generator=g)
    mask = (torch.rand(weight.shape, generator=g) >= sparsity).to(device)
    weight = weight.to(device).requires_grad_()
    x = x.to(device)

    def run(x_leaf: torch.Tensor) -> torch.Tensor:
        weight.grad = None
        if layer.kind == "conv":
            return ndsnn.ops.sparse_conv2d(x_leaf, weight, mask, None, layer.stride, layer.padding,
                                           implementation=implementation, spike_input=spikes)  # fmt: skip
        return ndsnn.ops.sparse_linear(x_leaf, weight, mask, implementation=implementation, spike_input=spikes)

    return fwd_bwd_step(run, x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8, help="N * T of the VGG-16 / ResNet-19 layers (default 8)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--min-run-time", type=float, default=0.15)
    parser.add_argument("--quick", action="store_true", help="four shapes")
    parser.add_argument("--output", default=None, help="results file (default dispatch_<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    os.environ["NDSNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="ndsnn-dispatch-")  # decisions measured afresh
    os.environ["NDSNN_DISPATCH"] = "measure"
    import ndsnn  # after the settings above

    chosen = layers(args.batch)
    if args.quick:
        quick = ("vgg16/conv6-7", "convnet/fc1 (28x28)", "other/linear 64->1000", "resnet19/stage2-down")
        chosen = [layer for layer in chosen if layer.name in quick]
    rows = []
    print(f"device={device} threads={torch.get_num_threads()} kernels={ndsnn.kernel_status().source} "
          f"isa={ndsnn.kernel_status().isa}")  # fmt: skip
    for layer in chosen:
        for spikes in (True, False):
            for sparsity in args.sparsities:
                fns = {name: step(layer, name, spikes, sparsity, device) for name in ("auto", "dense")}
                before = ndsnn.ops.dispatch.snapshot()
                medians = interleaved_medians(fns, device, args.min_run_time)  # the warm-up decides auto's path
                decisions = ndsnn.ops.dispatch.snapshot()
                new = [value for key, value in decisions.items() if key not in before]
                chose = "sparse" if any(new) else "dense"
                ratio = medians["dense"] / medians["auto"]
                row = {"layer": layer.name, "kind": layer.kind, "batch": layer.batch, "input": "spikes" if spikes
                       else "real", "sparsity": sparsity, "auto_ms": medians["auto"] * 1e3,
                       "dense_ms": medians["dense"] * 1e3, "auto_speed_vs_dense": ratio,
                       "auto_chose": chose, "decisions_so_far": len(decisions)}  # fmt: skip
                rows.append(row)
                print(f"{layer.name:34s} {row['input']:6s} sparsity {sparsity:5.3f}: dense {row['dense_ms']:8.2f} ms"
                      f" auto {row['auto_ms']:8.2f} ms  ({ratio:5.2f}x, {chose})", flush=True)  # fmt: skip
    ratios = [r["auto_speed_vs_dense"] for r in rows]
    below = [r for r in rows if r["auto_speed_vs_dense"] < 0.95]
    summary = {"rows": len(rows), "lowest": min(ratios), "median": statistics.median(ratios), "below_0.95": len(below),
               "at_99_percent": {r["layer"] + " " + r["input"]: round(r["auto_speed_vs_dense"], 3) for r in rows
                                 if r["sparsity"] == 0.99}}  # fmt: skip
    print(f"auto / dense over {len(rows)} rows: lowest {summary['lowest']:.3f}x, median {summary['median']:.3f}x, "
          f"{len(below)} below 0.95x")  # fmt: skip
    for r in below:
        print(f"  below 0.95x: {r['layer']} {r['input']} sparsity {r['sparsity']}: {r['auto_speed_vs_dense']:.3f}x")
    settings = {"sparsities": args.sparsities, "spike_rate": 0.15, "batch": args.batch, "dtype": "float32",
                "timed": "forward + backward (input and weight gradients), medians of interleaved runs",
                "dispatch": "measured on this machine into a fresh cache (the first call of each row)"}  # fmt: skip
    payload = {"benchmark": "bench_dispatch", "environment": environment(device), "settings": settings,
               "summary": summary, "results": rows}  # fmt: skip
    print(f"wrote {write_results(args.output or f'dispatch_{device.type}.json', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
