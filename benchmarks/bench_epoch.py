"""One training epoch of the spiking convnet on the whole of Fashion-MNIST (60000 images, T = 4, batch 128,
Adam): ndsnn with no pruning, with a static 90%-sparse mask, with NDSNN to 99% sparsity and with a static
99% mask (NDSNN's final density from the first step: the floor its later steps approach) (each one
`ndsnn train` process, as a user runs it), and the same network trained dense with SpikingJelly 2.0's LIFNode
(multi-step) and plain PyTorch layers, in this process. Each figure is the wall clock of the epoch plus the
evaluation on the 10000 test images; the runs take turns, one at a time.

    python benchmarks/bench_epoch.py                    # the four ndsnn runs and SpikingJelly
    python benchmarks/bench_epoch.py --runs dense ndsnn99
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_results  # noqa: E402

NDSNN_RUNS = {
    "dense": ("static", 0.0),
    "static90": ("static", 0.9),
    "ndsnn99": ("ndsnn", 0.99),
    "static99": ("static", 0.99),
}
SETTINGS = {"dataset": "fashion-mnist", "model": "convnet", "epochs": 1, "timesteps": 4, "batch_size": 128,
            "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "seed": 0}  # fmt: skip


def ndsnn_run(name: str, work: Path) -> dict:
    method, sparsity = NDSNN_RUNS[name]
    out = work / name
    options = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    command = [sys.executable, "-m", "ndsnn", "train", *options, "--method", method, "--sparsity", str(sparsity),
               "--out", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"run": name, "trainer_wall_s": summary["wall_time_s"], "process_wall_s": time.perf_counter() - started,
            "test_accuracy": summary["test_accuracy"], "sparsity": summary["sparsity"],
            "command": " ".join(command[1:]).replace(str(out), "OUT")}  # fmt: skip


def spikingjelly_run(work: Path) -> dict:
    """The same epoch and evaluation, in this process, by ndsnn.reproduce.peer: the same network with
    SpikingJelly's LIFNode and nn layers, the same data order, normalisation, optimizer and schedule."""
    from ndsnn.reproduce.peer import train_spikingjelly

    summary = train_spikingjelly({**SETTINGS, "method": "static", "sparsity": 0.0}, work / "spikingjelly")
    return {"run": "spikingjelly dense", "trainer_wall_s": summary["wall_time_s"], "process_wall_s": None,
            "test_accuracy": summary["test_accuracy"], "sparsity": 0.0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=[*NDSNN_RUNS, "spikingjelly"],
                        choices=[*NDSNN_RUNS, "spikingjelly"])  # fmt: skip
    parser.add_argument("--output", default="epoch_fashion_mnist_cpu.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.runs:
            row = spikingjelly_run(Path(work)) if name == "spikingjelly" else ndsnn_run(name, Path(work))
            rows.append(row)
            print(f"{row['run']:18s}: {row['trainer_wall_s']:7.1f} s, test accuracy {100 * row['test_accuracy']:.2f}%, "
                  f"sparsity {100 * row['sparsity']:.1f}%", flush=True)  # fmt: skip
    base = next((r["trainer_wall_s"] for r in rows if r["run"] == "dense"), None)
    for row in rows:
        row["time_vs_ndsnn_dense"] = row["trainer_wall_s"] / base if base else None
        print(f"{row['run']:18s}: {row['time_vs_ndsnn_dense']:.2f}x the time of ndsnn dense" if base else "")
    payload = {"benchmark": "bench_epoch", "environment": environment(torch.device("cpu")), "settings": SETTINGS,
               "timed": "the trainer's wall clock: one epoch of training plus the test-set evaluation",
               "results": rows}  # fmt: skip
    print(f"wrote {write_results(args.output, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
