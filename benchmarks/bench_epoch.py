"""One training epoch of the spiking convnet on the whole of Fashion-MNIST (60000 images, T = 4, batch 128,
Adam): ndsnn with no pruning, with a static 90%-sparse mask, with NDSNN to 99% sparsity and with a static
99% mask (NDSNN's final density from the first step: the floor its later steps approach) (each one
`ndsnn train` process, as a user runs it), and the same network trained dense with SpikingJelly 2.0's LIFNode
(multi-step) and plain PyTorch layers, in this process. Each figure is the wall clock of the epoch plus the
evaluation on the 10000 test images; the runs take turns, one at a time.

    python benchmarks/bench_epoch.py                    # the four ndsnn runs and SpikingJelly
    python benchmarks/bench_epoch.py --runs dense ndsnn99
    python benchmarks/bench_epoch.py --runs dense ndsnn99 --repeat 3   # rounds in turns, medians of ratios
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of all the runs, in turns; each ratio is taken against the dense run of "
                             "its own round, and the summary gives their medians (default 1)")  # fmt: skip
    parser.add_argument("--output", default="epoch_fashion_mnist_cpu.json")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be a positive integer, got {args.repeat}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for round_index in range(args.repeat):
            round_rows = []
            for name in args.runs:
                here = Path(work) / f"round{round_index}"
                row = spikingjelly_run(here) if name == "spikingjelly" else ndsnn_run(name, here)
                row["round"] = round_index
                round_rows.append(row)
                accuracy, sparsity = 100 * row["test_accuracy"], 100 * row["sparsity"]
                print(f"{row['run']:18s}: {row['trainer_wall_s']:7.1f} s, test accuracy {accuracy:.2f}%, "
                      f"sparsity {sparsity:.1f}%", flush=True)  # fmt: skip
            base = next((r["trainer_wall_s"] for r in round_rows if r["run"] == "dense"), None)
            for row in round_rows:
                row["time_vs_ndsnn_dense"] = row["trainer_wall_s"] / base if base else None
            rows += round_rows
    summary = {}
    for name in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == name]
        ratios = [r["time_vs_ndsnn_dense"] for r in mine if r["time_vs_ndsnn_dense"] is not None]
        summary[name] = {"median_s": statistics.median(r["trainer_wall_s"] for r in mine),
                         "min_s": min(r["trainer_wall_s"] for r in mine),
                         "max_s": max(r["trainer_wall_s"] for r in mine),
                         "median_vs_ndsnn_dense": statistics.median(ratios) if ratios else None,
                         "ratios_vs_ndsnn_dense": ratios}  # fmt: skip
        ratio = summary[name]["median_vs_ndsnn_dense"]
        versus = f", {ratio:.2f}x the time of ndsnn dense (median of {len(ratios)} rounds)" if ratio else ""
        print(f"{name:18s}: median {summary[name]['median_s']:.1f} s{versus}")
    payload = {"benchmark": "bench_epoch", "environment": environment(torch.device("cpu")), "settings": SETTINGS,
               "timed": "the trainer's wall clock: one epoch of training plus the test-set evaluation",
               "repeat": args.repeat, "summary": summary, "results": rows}  # fmt: skip
    print(f"wrote {write_results(args.output, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
