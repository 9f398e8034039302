"""The direct-encoding stem's LIF neurons and the 2x2 max pooling after them, as ndsnn's fused op
(ndsnn.ops.lif_repeated_max_pool) against the same two layers run apart (ndsnn.ops.lif_repeated, then
ndsnn.nn.MaxPool2d per frame, what the convnet ran before), forward alone and forward + backward, in turns in one
run, with kept memory (ndsnn.cpu_allocator, as `ndsnn train` runs). Also the bytes autograd keeps for backward.

    python benchmarks/bench_stem_lif_pool.py     # the convnet's stem on Fashion-MNIST: 128 x 32 x 28 x 28, T = 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SavedTensorBytes, environment, interleaved_medians, write_results  # noqa: E402

from ndsnn import cpu_allocator  # noqa: E402
from ndsnn.models.layers import DEFAULT_LIF, PerFrame  # noqa: E402
from ndsnn.nn import MaxPool2d  # noqa: E402
from ndsnn.ops import lif_repeated, lif_repeated_max_pool  # noqa: E402

FRAMES = ((128, 32, 28, 28), (128, 64, 32, 32))  # the convnet's stem on Fashion-MNIST; a wider, larger one
STEPS = 4
OPTIONS = {key: DEFAULT_LIF[key] for key in ("tau", "v_threshold", "v_reset", "detach_reset", "surrogate")}


def _runs(frame: torch.Tensor) -> dict[str, callable]:
    pool = PerFrame(MaxPool2d(2))

    def fused(x: torch.Tensor) -> torch.Tensor:
        return lif_repeated_max_pool(x, STEPS, 2, **OPTIONS).spikes

    def apart(x: torch.Tensor) -> torch.Tensor:
        return pool(lif_repeated(x, STEPS, **OPTIONS))

    return {"fused": fused, "apart": apart}


def _saved_bytes(fn, frame: torch.Tensor) -> int:
    x = frame.detach().requires_grad_()
    counter = SavedTensorBytes(exclude=(x,))
    with counter.hooks():
        out = fn(x)
    del out
    return counter.total


def measure(shape: tuple[int, ...], min_run_time: float) -> dict:
    # batch-normalised stem output: about N(0, 1) per channel; about 10-20% of the neurons fire
    frame = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    runs = _runs(frame)
    x = frame.detach().requires_grad_()
    grad = torch.ones(STEPS, shape[0], shape[1], shape[2] // 2, shape[3] // 2)

    def step(fn):
        def run() -> None:
            x.grad = None
            fn(x).backward(grad)

        return run

    def forward(fn):
        def run() -> None:
            with torch.no_grad():
                fn(frame)

        return run

    calls = {f"{name} forward": forward(fn) for name, fn in runs.items()}
    calls.update({f"{name} forward+backward": step(fn) for name, fn in runs.items()})
    ms = {k: 1e3 * v for k, v in interleaved_medians(calls, torch.device("cpu"), min_run_time).items()}
    return {
        "frame": list(shape),
        "median_ms": ms,
        "forward_speedup": ms["apart forward"] / ms["fused forward"],
        "step_speedup": ms["apart forward+backward"] / ms["fused forward+backward"],
        "saved_bytes": {name: _saved_bytes(fn, frame) for name, fn in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per variant")
    args = parser.parse_args(argv)
    cpu_allocator.keep_freed_memory()
    rows = [measure(shape, args.min_run_time) for shape in FRAMES]
    for row in rows:
        ms = row["median_ms"]
        print(f"frame {tuple(row['frame'])}, T={STEPS}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
              + f" | forward {row['forward_speedup']:.2f}x, forward+backward {row['step_speedup']:.2f}x; saved "
              + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in row["saved_bytes"].items()))  # fmt: skip
    payload = {"benchmark": "bench_stem_lif_pool", "environment": environment(torch.device("cpu")),
               "settings": {"steps": STEPS, "window": 2, "dtype": "float32", "lif": OPTIONS,
                            "allocator": cpu_allocator.state(), "min_run_time_s": args.min_run_time,
                            "input": "randn frame (a batch-normalised stem output)"},
               "timed": "median ms per call, the four calls in turns", "results": rows}  # fmt: skip
    print(f"wrote {write_results('stem_lif_pool_cpu.json', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
