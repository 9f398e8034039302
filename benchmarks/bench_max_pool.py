"""Max pooling 2x2 / 2 of spike maps: ndsnn's kernel (ndsnn.ops.max_pool_window) against PyTorch's
max_pool2d_with_indices and its backward, forward and backward timed apart, in turns, in one run; each
configuration once with glibc's default malloc (every big tensor a fresh, page-faulted mmap) and once with
kept memory (ndsnn.cpu_allocator, what `ndsnn train` runs under), each in a process of its own.

    python benchmarks/bench_max_pool.py          # the convnet's two pooling layers on Fashion-MNIST, T=4, N=128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, interleaved_medians, write_results  # noqa: E402

SHAPES = ((512, 32, 28, 28), (512, 64, 14, 14))  # [T * N, C, H, W] of the convnet's pool1 and pool2
SPIKE_RATE = 0.2


def _calls(shape: tuple[int, ...]) -> dict:
    """The four timed calls on one spike map of `shape`."""
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < SPIKE_RATE).float()
    _, aten_index = F.max_pool2d_with_indices(x, 2)
    _, ndsnn_index = torch.ops.ndsnn.max_pool_window_forward(x, 2)
    grad = torch.rand(aten_index.shape)
    window, stride, padding, dilation = [2, 2], [2, 2], [0, 0], [1, 1]
    return {
        "aten forward": lambda: F.max_pool2d_with_indices(x, 2),
        "aten backward": lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, window, stride, padding, dilation, False, aten_index
        ),
        "ndsnn forward": lambda: torch.ops.ndsnn.max_pool_window_forward(x, 2),
        "ndsnn backward": lambda: torch.ops.ndsnn.max_pool_window_backward(grad, ndsnn_index, list(shape), 2),
    }


def measure(min_run_time: float) -> list[dict]:
    """The timings of this process (its allocator as NDSNN_CPU_ALLOCATOR says)."""
    from ndsnn import cpu_allocator

    cpu_allocator.keep_freed_memory()
    rows = []
    for shape in SHAPES:
        fns = _calls(shape)
        ms = {k: 1e3 * v for k, v in interleaved_medians(fns, torch.device("cpu"), min_run_time).items()}
        rows.append({"shape": list(shape), "allocator": cpu_allocator.state(), "median_ms": ms,
                     "forward_speedup": ms["aten forward"] / ms["ndsnn forward"],
                     "backward_speedup": ms["aten backward"] / ms["ndsnn backward"]})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per variant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.min_run_time)))
        return 0
    rows = []
    for policy in ("system", "keep"):
        env = {**os.environ, "NDSNN_CPU_ALLOCATOR": policy}
        command = [sys.executable, __file__, "--child", "--min-run-time", str(args.min_run_time)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        rows.extend(json.loads(result.stdout.strip().splitlines()[-1]))
    for row in rows:
        ms = row["median_ms"]
        print(f"{str(tuple(row['shape'])):20s} malloc {row['allocator']:6s}: "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
              + f" | forward {row['forward_speedup']:.2f}x, backward {row['backward_speedup']:.2f}x")  # fmt: skip
    payload = {"benchmark": "bench_max_pool", "environment": environment(torch.device("cpu")),
               "settings": {"window": 2, "stride": 2, "dtype": "float32", "spike_rate": SPIKE_RATE,
                            "min_run_time_s": args.min_run_time},
               "timed": "median seconds per call, the four calls in turns", "results": rows}  # fmt: skip
    print(f"wrote {write_results('max_pool_cpu.json', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
