"""A whole training run, wall clock: NDSNN to 99% sparsity against dense training and against LTH (all of its
rounds), on the same model, data, epochs, timesteps and seed.

Each run is one `ndsnn train` process, the command a user types (benchmarks/compare_methods.run_method);
the figures are the trainer's own wall time (data loading, training, evaluation after every epoch) and the
whole process's. Dense is `--method static --sparsity 0` (no mask ever prunes). LTH trains --epochs per
round until its pruning reaches the target (--lth-prune-rate of the remaining weights per round).

    python benchmarks/bench_train_run.py                                  # digits, convnet, CPU
    python benchmarks/bench_train_run.py --dataset fashion-mnist --epochs 3 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_results  # noqa: E402
from compare_methods import row, run_method  # noqa: E402

RUNS = (("dense", "static", 0.0), ("ndsnn", "ndsnn", None), ("lth", "lth", None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every run (per round for LTH)")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--lth-prune-rate", type=float, default=0.5, help="fraction LTH prunes per round")
    parser.add_argument("--output", help="results file name (default train_run_<dataset>_<device>.json)")
    parser.add_argument("train_args", nargs="*", help="more `ndsnn train` options, after --")
    args = parser.parse_args(argv)
    if not 0.0 < args.sparsity < 1.0:
        parser.error("--sparsity must be in (0, 1)")
    device = torch.device(args.device)
    rows, summaries = [], []
    with tempfile.TemporaryDirectory() as work:
        for label, method, sparsity in RUNS:
            run_args = copy.copy(args)
            run_args.sparsity = args.sparsity if sparsity is None else sparsity
            run_args.train_args = ["--device", args.device, *args.train_args]
            if method == "lth":
                run_args.train_args += ["--method-option", f"prune_rate={args.lth_prune_rate}"]
            summary = run_method(method, run_args, Path(work) / label)
            summaries.append(summary)
            rows.append({"run": label, **row(summary), "trainer_wall_s": summary["wall_time_s"]})
            print(f"{label:6s}: {100 * summary['test_accuracy']:.2f}% at sparsity {100 * summary['sparsity']:.2f}%, "
                  f"{summary['rounds']} round(s), trainer {summary['wall_time_s']:.1f} s, process "
                  f"{summary['process_wall_s']:.1f} s", flush=True)  # fmt: skip
    by_run = {r["run"]: r for r in rows}
    for r in rows:
        r["wall_vs_dense"] = r["trainer_wall_s"] / by_run["dense"]["trainer_wall_s"]
        r["wall_vs_lth"] = r["trainer_wall_s"] / by_run["lth"]["trainer_wall_s"]
        print(f"{r['run']:6s}: wall {r['wall_vs_dense']:.2f}x dense, {r['wall_vs_lth']:.3f}x LTH; FLOPs "
              f"{100 * r['flops_relative_to_dense']:.1f}% of dense training")  # fmt: skip
    settings = {k: v for k, v in vars(args).items() if k != "output"}
    payload = {"benchmark": "bench_train_run", "environment": environment(device), "settings": settings,
               "rows": rows, "summaries": summaries}  # fmt: skip
    path = write_results(args.output or f"train_run_{args.dataset}_{device.type}.json", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
