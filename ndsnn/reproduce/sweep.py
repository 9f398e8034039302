"""Runs a grid of `ndsnn train` runs (method x sparsity x seed), each in its own directory, and collects
their summaries. A sweep can be stopped and started again: finished runs are skipped, interrupted ones resume
from their checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .budgets import Budget


@dataclass(frozen=True)
class RunSpec:
    method: str  # a sparsity method, or "dense"
    sparsity: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.sparsity:g}-seed{self.seed}"


def grid(budget: Budget) -> list[RunSpec]:
    """Every run of the budget; dense once per seed."""
    runs = []
    for seed in budget.seeds:
        for method in budget.methods:
            sparsities = (0.0,) if method == "dense" else budget.sparsities
            runs.extend(RunSpec(method, sparsity, seed) for sparsity in sparsities)
    return runs


def train_options(budget: Budget, run: RunSpec, data_dir: str | None) -> dict[str, Any]:
    """The `ndsnn train` options of one run (a config file's content)."""
    options: dict[str, Any] = {
        "dataset": budget.dataset, "model": budget.model, "epochs": budget.epochs, "timesteps": budget.timesteps,
        "batch_size": budget.batch_size, "lr": budget.lr, "seed": run.seed, "sparsity": run.sparsity,
        "method": "static" if run.method == "dense" else run.method, "train_samples": budget.train_samples,
        "test_samples": budget.test_samples, "data_dir": data_dir, "progress": False, **budget.extra,
    }  # fmt: skip
    if run.method == "lth":
        options["method_options"] = {"prune_rate": budget.lth_prune_rate}
    return options


def run_in_process(options: dict[str, Any], out: Path, resume: bool) -> None:
    from ..train.config import TrainConfig
    from ..train.run import train

    config = TrainConfig.from_dict({**options, "out": str(out)})
    train(config, resume=str(out / "checkpoint.pt") if resume else None, overwrite=not resume, plots=False,
          verbose=False)  # fmt: skip


def run_as_process(options: dict[str, Any], out: Path, resume: bool) -> None:
    """`python -m ndsnn train --config <options>`: a fresh process per run, as a user would start it."""
    config_file = out / "sweep_config.json"
    config_file.write_text(json.dumps({**options, "out": str(out)}))
    command = [sys.executable, "-m", "ndsnn", "train", "--config", str(config_file), "--no-plots"]
    command += ["--resume", str(out / "checkpoint.pt")] if resume else ["--overwrite"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"run in {out} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")


def run_sweep(budget: Budget, out_dir: str | Path, data_dir: str | None = None, in_process: bool = False,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:  # fmt: skip
    """Runs (or skips, or resumes) every run of the budget; returns their summaries with the run's spec."""
    out_dir = Path(out_dir)
    runner = run_in_process if in_process else run_as_process
    summaries = []
    runs = grid(budget)
    for index, run in enumerate(runs, 1):
        out = out_dir / "runs" / run.name
        summary_file = out / "summary.json"
        if not summary_file.exists():
            out.mkdir(parents=True, exist_ok=True)
            resume = (out / "checkpoint.pt").exists()
            log(f"[{index}/{len(runs)}] {run.name}{' (resuming)' if resume else ''}")
            runner(train_options(budget, run, data_dir), out, resume)
        summary = json.loads(summary_file.read_text())
        summaries.append({**summary, "run": {"method": run.method, "sparsity": run.sparsity, "seed": run.seed}})
    return summaries
