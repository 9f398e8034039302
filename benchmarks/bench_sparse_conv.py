"""Masked sparse convolution: ndsnn's compiled sparse kernel and its dispatcher ("auto") vs the dense
convolution on weight * mask (mkldnn on CPU, cuDNN on CUDA), measured side by side in one run.

Default: one layer (256->256, 3x3, 8x8, batch 64, spike input at 10% rate), the shape the CPU target is
stated for. --suite: every conv layer shape of VGG-16 and ResNet-19 at 32x32 (benchmarks/conv_layers.py),
spike and real inputs. Sparsities run from the sparsest down; once the sparse kernel is more than
--give-up times slower than dense, denser masks are timed for dense and auto only. Backward time is
(forward + backward) - forward, each a median of interleaved runs. Per layer and input kind the crossover is
the densest mask up to which the sparse kernel is at least --crossover-margin (1.1) times faster than dense
(forward + backward; the margin absorbs timing noise); --write-crossover
stores them as the package's dispatcher table (ndsnn/ops/sparse_crossover.json) for this device kind.

    python benchmarks/bench_sparse_conv.py                       # the headline layer, CPU
    python benchmarks/bench_sparse_conv.py --suite --write-crossover
    python benchmarks/bench_sparse_conv.py --suite --device cuda --batch 512 --write-crossover
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, interleaved_medians, write_results  # noqa: E402
from conv_layers import LAYERS, ConvLayer  # noqa: E402

import ndsnn  # noqa: E402
from ndsnn.ops import crossover  # noqa: E402
from ndsnn.ops.sparse_conv2d_tiled import sparse_conv2d_tiled  # noqa: E402

SPARSITIES = (0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.5, 0.0)
HEADLINE = ConvLayer("headline", "256x256-8x8", 256, 256, 3, 1, 1, 8, 1)
IMPLEMENTATIONS = ("dense", "sparse", "auto", "tiled", "general")
# "sparse": the op's sparse kernels (on CUDA the tiled ones where they are verified and fit, else the general
# ones); "tiled" / "general": one family of CUDA kernels, called directly whatever the op would choose.
# name -> (dtype, TF32 allowed); CUDA reports TF32 on (cuDNN's default) and off, and bf16.
PRECISIONS = {"fp32-tf32": (torch.float32, True), "fp32": (torch.float32, False), "bf16": (torch.bfloat16, False)}


sparse_conv2d_module = importlib.import_module("ndsnn.ops.sparse_conv2d")  # the module, not the op


@contextlib.contextmanager
def general_kernels():
    """The op with its tiled kernels switched off (the general sparse kernels), for side-by-side timing."""
    saved = sparse_conv2d_module.use_tiled
    sparse_conv2d_module.use_tiled = lambda *args: False
    try:
        yield
    finally:
        sparse_conv2d_module.use_tiled = saved


def _inputs(layer: ConvLayer, batch: int, spike_rate: float, dtype, device) -> torch.Tensor:
    shape = (batch, layer.in_channels, layer.size, layer.size)
    x = (torch.rand(shape, device=device) < spike_rate).to(dtype) if spike_rate else torch.randn(shape, device=device)
    return x.to(dtype)


def _steps(layer: ConvLayer, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, backward: bool):
    """One callable per implementation doing a forward (and backward) pass of the layer."""
    x_leaf, w_leaf = x.clone().requires_grad_(backward), weight.clone().requires_grad_(backward)

    def make(implementation: str):
        def step() -> None:
            if implementation == "tiled":
                out = sparse_conv2d_tiled(x_leaf, w_leaf, mask, None, layer.stride, layer.padding)
            elif implementation == "general":
                with general_kernels():
                    out = ndsnn.ops.sparse_conv2d(x_leaf, w_leaf, mask, None, layer.stride, layer.padding,
                                                  implementation="sparse")  # fmt: skip
            else:
                out = ndsnn.ops.sparse_conv2d(
                    x_leaf, w_leaf, mask, None, layer.stride, layer.padding, implementation=implementation
                )
            if backward:
                out.backward(torch.ones_like(out))

        return step

    return make


def measure_layer(layer, batch, spike_rate, precision, device, args) -> list[dict]:
    dtype, tf32 = PRECISIONS[precision]
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.manual_seed(0)
    x = _inputs(layer, batch, spike_rate, dtype, device)
    weight = torch.randn(layer.out_channels, layer.in_channels, layer.kernel, layer.kernel, device=device).to(dtype)
    rows, sparse_hopeless = [], False
    for sparsity in args.sparsities:
        mask = torch.rand(weight.shape, device=device) >= sparsity
        names = [n for n in args.implementations if not (sparse_hopeless and n == "sparse")]
        timings = {}
        for phase, backward in (("fwd", False), ("fwd_bwd", True)):
            make = _steps(layer, x, weight, mask, backward)
            with torch.set_grad_enabled(backward):
                medians = interleaved_medians({n: make(n) for n in names}, device, args.min_run_time, 3)
            timings[phase] = {n: t * 1e3 for n, t in medians.items()}
        timings["bwd"] = {n: timings["fwd_bwd"][n] - timings["fwd"][n] for n in names}
        row = {
            "layer": layer.key,
            "input": "spikes" if spike_rate else "real",
            "precision": precision,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,  # as set for this row's timing
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "sparsity": sparsity,
            "density": mask.float().mean().item(),
            "ms": timings,
            "speedup": {
                phase: {n: timings[phase]["dense"] / timings[phase][n] for n in names if n != "dense"}
                for phase in timings
            },
        }
        rows.append(row)
        sparse_ratio = row["speedup"]["fwd_bwd"].get("sparse")
        ms = timings["fwd_bwd"]
        text = " | ".join(
            f"{n} {ms[n]:8.2f} ms ({row['speedup']['fwd_bwd'][n]:5.2f}x)" if n in ms else f"{n} (skipped)"
            for n in args.implementations[1:]
        )
        print(
            f"{layer.key:28s} {row['input']:6s} {precision:9s} sparsity {sparsity:5.3f}: fwd+bwd dense "
            f"{ms['dense']:8.2f} ms | {text}",
            flush=True,
        )
        if sparse_ratio is not None and sparse_ratio < 1.0 / args.give_up:
            sparse_hopeless = True
    return rows


def crossover_density(rows: list[dict], margin: float) -> float:
    """The densest mask up to which (from the sparsest) the sparse kernel is at least `margin` times faster
    than dense, fwd + bwd. A margin above 1 keeps timing noise (several percent on a shared machine) from
    sending the dispatcher to the sparse kernel where the two are level."""
    best = 0.0
    for row in sorted(rows, key=lambda r: r["density"]):
        ratio = row["speedup"]["fwd_bwd"].get("sparse")
        if ratio is None or ratio < margin:
            break
        best = row["density"]
    return best


def write_crossover(records: list[dict], device: torch.device) -> Path:
    path = crossover.TABLE_FILE
    payload = json.loads(path.read_text()) if path.exists() else {"format": crossover.TABLE_FORMAT, "devices": {}}
    payload["devices"][device.type] = records
    devices = ",\n".join(
        f"  {json.dumps(name)}: [\n" + ",\n".join(f"   {json.dumps(r)}" for r in rows) + "\n  ]"
        for name, rows in payload["devices"].items()
    )
    path.write_text(f'{{\n "format": {payload["format"]},\n "devices": {{\n{devices}\n }}\n}}\n')
    crossover.clear_cache()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--suite", action="store_true", help="every VGG-16 / ResNet-19 conv layer shape")
    parser.add_argument("--layers", nargs="+", help="only these layer keys (e.g. vgg16/conv4)")
    parser.add_argument("--batch", type=int, help="N * T (default: 64 headline; suite 8 CPU, 512 CUDA)")
    parser.add_argument("--spike-rate", type=float, default=0.1, help="fraction of ones in spike inputs")
    parser.add_argument("--inputs", nargs="+", default=None, choices=["spikes", "real"])
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), help="default fp32 (CPU), all (CUDA)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--give-up", type=float, default=3.0, help="stop timing sparse once this many times slower")
    parser.add_argument("--min-run-time", type=float, default=0.3)
    parser.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=None,
                        help="what to time against dense (always timed); default sparse auto, and on CUDA also "
                        "tiled general (on the CPU tiled is an emulation: slow)")  # fmt: skip
    parser.add_argument("--write-crossover", action="store_true", help="store the crossovers for the dispatcher")
    parser.add_argument("--crossover-margin", type=float, default=1.1, help="speedup the sparse kernel must reach")
    parser.add_argument("--output", help="results file name (default by mode and device)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    env = environment(device)  # before any row sets its own TF32 flags (each row records those it ran with)
    args.sparsities = sorted(args.sparsities, reverse=True)
    chosen = args.implementations or (list(IMPLEMENTATIONS) if device.type == "cuda" else ["sparse", "auto"])
    args.implementations = ["dense", *(n for n in chosen if n != "dense")]
    if args.write_crossover and "sparse" not in args.implementations:
        parser.error("--write-crossover needs the sparse kernel timed (--implementations ... sparse)")
    layers = LAYERS if args.suite else [HEADLINE]
    if args.layers:
        layers = [layer for layer in layers if layer.key in args.layers]
    batch = args.batch or (64 if not args.suite else 512 if device.type == "cuda" else 8)
    inputs = args.inputs or (["spikes", "real"] if args.suite else ["spikes"])
    precisions = args.precisions or (list(PRECISIONS) if device.type == "cuda" else ["fp32"])
    if device.type == "cpu" and "fp32-tf32" in precisions:
        precisions.remove("fp32-tf32")  # TF32 is a CUDA mode
    print(f"device={device} batch={batch} inputs={inputs} precisions={precisions} threads={torch.get_num_threads()}")

    rows, records = [], []
    for layer in layers:
        for kind in inputs:
            for precision in precisions:
                layer_rows = measure_layer(layer, batch, args.spike_rate if kind == "spikes" else 0.0, precision,
                                           device, args)  # fmt: skip
                rows += layer_rows
                if "sparse" not in args.implementations:
                    continue
                density = crossover_density(layer_rows, args.crossover_margin)
                print(f"  crossover density {layer.key} {kind} {precision}: {density:.4f}")
                if precision == precisions[0]:
                    records.append(dict(
                        in_channels=layer.in_channels, out_channels=layer.out_channels, kernel=layer.kernel,
                        stride=layer.stride, size=layer.size, batch=batch, spike_input=kind == "spikes",
                        max_density=density, layer=layer.key,
                    ))  # fmt: skip

    auto_ratios = [r["speedup"]["fwd_bwd"]["auto"] for r in rows if "auto" in r["speedup"]["fwd_bwd"]]
    never_below = min(auto_ratios, default=None)
    print(f"lowest auto / dense ratio (fwd+bwd) over every row: {never_below}")
    settings = {
        "layers": [layer.__dict__ for layer in layers],
        "batch": batch,
        "spike_rate": args.spike_rate,
        "inputs": inputs,
        "precisions": precisions,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "dense": "F.conv2d on weight * mask (mkldnn on CPU, cuDNN on CUDA)",
        "auto": "ndsnn.ops.sparse_conv2d(implementation='auto') with the crossover table installed at run time",
        "bwd": "median(fwd+bwd) - median(fwd)",
        "min_run_time_s": args.min_run_time,
        "give_up": args.give_up,
        "crossover_margin": args.crossover_margin,
    }
    payload = {
        "benchmark": "bench_sparse_conv",
        "environment": env,
        "settings": settings,
        "results": rows,
        "implementations": args.implementations,
        "crossover": records,
        "lowest_auto_speedup_fwd_bwd": never_below,
    }
    name = args.output or f"sparse_conv_{'suite_' if args.suite else ''}{device.type}.json"
    print(f"wrote {write_results(name, payload)}")
    if args.write_crossover:
        print(f"wrote {write_crossover(records, device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
