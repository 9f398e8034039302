"""Every sparsity method trained with the same settings, side by side: accuracy, sparsity, training cost
(FLOPs and synaptic operations, the method's own decision cost), spike rate and wall time.

Each method runs as its own `ndsnn train` process (the same command a user types), one after the other, on
the same data, model, seed and schedule; LTH trains --epochs per round for all of its rounds, so its cost is
the sum over them. Default: digits, the spiking convnet, 90% sparsity, 20 epochs, T = 4 (the main job's
settings).

    python benchmarks/compare_methods.py [--dataset fashion-mnist --epochs 10 ...] [--methods ndsnn lth ...]
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
from common import environment, write_results

from ndsnn.sparse import METHODS


def run_method(method: str, args: argparse.Namespace, work: Path) -> dict:
    out = work / method
    command = [sys.executable, "-m", "ndsnn", "train", "--method", method, "--dataset", args.dataset, "--model",
               args.model, "--sparsity", str(args.sparsity), "--epochs", str(args.epochs), "--timesteps",
               str(args.timesteps), "--seed", str(args.seed), "--out", str(out), "--no-progress", "--no-plots",
               *args.train_args]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    summary["process_wall_s"] = time.perf_counter() - started
    summary["command"] = " ".join(command[1:]).replace(str(out), "OUT")
    return summary


def row(summary: dict) -> dict:
    cost = summary["training_cost"]
    return {
        "method": summary["method"],
        "test_accuracy": summary["test_accuracy"],
        "best_test_accuracy": summary["best_test_accuracy"],
        "sparsity": summary["sparsity"],
        "compression_ratio": summary["compression_ratio"],
        "rounds": summary["rounds"],
        "steps": summary["steps"],
        "flops": cost["flops"],
        "flops_relative_to_dense": cost["flops_relative_to_dense"],
        "sops": cost["sops"],
        "decision_ops": cost["method_decision_ops"],
        "spike_rate": sum(summary["spike_rates"].values()) / max(1, len(summary["spike_rates"])),
        "wall_s": summary["process_wall_s"],
    }


def table(rows: list[dict], reference: str | None) -> str:
    by_method = {r["method"]: r for r in rows}
    base = by_method.get(reference)
    header = "| method | test acc (best) | sparsity | training FLOPs (of dense) | " + (
        f"FLOPs vs {reference} | " if base else "") + "SOPs | decision ops | spike rate | wall s |"  # fmt: skip
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        versus = f"{100 * r['flops'] / base['flops']:.1f}% | " if base else ""
        rounds = f" ({r['rounds']} rounds)" if r["rounds"] > 1 else ""
        lines.append(
            f"| {r['method']}{rounds} | "
            f"{100 * r['test_accuracy']:.2f}% ({100 * r['best_test_accuracy']:.2f}%) | {100 * r['sparsity']:.2f}% | "
            f"{r['flops']:.3g} ({100 * r['flops_relative_to_dense']:.1f}%) | {versus}{r['sops']:.3g} | "
            f"{r['decision_ops']:.3g} | {r['spike_rate']:.3f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default="lth", help="method whose FLOPs the others are compared to")
    parser.add_argument(
        "--out", default=None, help="results JSON (default benchmarks/results/methods_<dataset>_cpu.json)"
    )
    parser.add_argument("train_args", nargs="*", help="more `ndsnn train` options, after --")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, summaries = [], []
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods:
            summary = run_method(method, args, Path(work))
            summaries.append(summary)
            rows.append(row(summary))
            print(f"{method}: {100 * summary['test_accuracy']:.2f}%", flush=True)
    print(table(rows, args.reference if args.reference in args.methods else None))
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    payload = {"environment": environment(torch.device(device)), "settings": settings, "rows": rows,
               "summaries": summaries}  # fmt: skip
    out = write_results(args.out or f"methods_{args.dataset}_{device}.json", payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
