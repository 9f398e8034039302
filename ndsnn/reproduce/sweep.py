"""Runs a grid of `ndsnn train` runs (method x sparsity x seed), each in its own directory, and collects
their summaries. A sweep can be stopped and started again: finished runs are skipped, interrupted ones resume
from their checkpoint. Equal-cost runs come after the runs they are scaled from (same seed and sparsity), and
peer runs (another framework's dense network) last."""

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
    cost_of: str | None = None  # trained at this other method's FLOPs (same sparsity and seed)
    framework: str = "ndsnn"  # "spikingjelly" for a peer's dense run

    @property
    def name(self) -> str:
        if self.framework != "ndsnn":
            return f"{self.method}-{self.framework}-seed{self.seed}"
        cost = f"-at-{self.cost_of}-cost" if self.cost_of else ""
        return f"{self.method}{cost}-s{self.sparsity:g}-seed{self.seed}"

    @property
    def label(self) -> str:
        """The row's name in the table."""
        if self.framework != "ndsnn":
            return f"{self.method} ({self.framework})"
        return f"{self.method} @ {self.cost_of} cost" if self.cost_of else self.method

    def own_full_run(self) -> RunSpec:
        return RunSpec(self.method, self.sparsity, self.seed)

    def reference_run(self) -> RunSpec:
        return RunSpec(str(self.cost_of), self.sparsity, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "sparsity": self.sparsity, "seed": self.seed, "cost_of": self.cost_of,
                "framework": self.framework, "label": self.label}  # fmt: skip


def grid(budget: Budget) -> list[RunSpec]:
    """Every run of the budget, in an order that has each run's references done before it; dense once per
    seed."""
    runs = []
    for seed in budget.seeds:
        for method in budget.methods:
            sparsities = (0.0,) if method == "dense" else budget.sparsities
            runs.extend(RunSpec(method, sparsity, seed) for sparsity in sparsities)
        for method, reference in budget.cost_pairs():
            runs.extend(RunSpec(method, sparsity, seed, cost_of=reference) for sparsity in budget.sparsities)
        runs.extend(RunSpec("dense", 0.0, seed, framework=peer) for peer in budget.peers)
    return runs


def train_options(budget: Budget, run: RunSpec, data_dir: str | None,
                  done: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """The `ndsnn train` options of one run (a config file's content); `done` (summaries by run name) gives
    an equal-cost run the FLOPs of the runs it is scaled from."""
    method = "static" if run.method == "dense" else run.method
    options: dict[str, Any] = {
        "dataset": budget.dataset, "model": budget.model, "epochs": budget.epochs, "timesteps": budget.timesteps,
        "batch_size": budget.batch_size, "lr": budget.lr, "optimizer": budget.optimizer, "seed": run.seed,
        "sparsity": run.sparsity, "method": method, "train_samples": budget.train_samples,
        "test_samples": budget.test_samples, "data_dir": data_dir, "progress": False, **budget.extra,
    }  # fmt: skip
    if run.method in budget.method_options:
        options["method_options"] = dict(budget.method_options[run.method])
    if run.cost_of is not None:
        done = done or {}
        options["epochs"] = equal_cost_epochs(budget.epochs, run, done)
        interval = done[run.own_full_run().name].get("update_interval")
        if interval and "update_interval" not in budget.extra:
            options["update_interval"] = interval  # its full run's: the same method, only longer or shorter
    return options


def equal_cost_epochs(epochs: float, run: RunSpec, done: dict[str, dict[str, Any]]) -> float:
    """The training length (epochs, per round for a method in rounds) at which `run`'s method costs what its
    reference's run cost: at its full run's update interval (train_options keeps it) a method's FLOPs grow
    in proportion to its length (its schedule is a fraction of the run, its dense-gradient steps one per
    update), so its full run's FLOPs give the scale."""
    own, reference = run.own_full_run(), run.reference_run()
    missing = [spec.name for spec in (own, reference) if spec.name not in done]
    if missing:
        verb = "have" if len(missing) > 1 else "has"
        raise RuntimeError(f"{run.name} is scaled from {' and '.join(missing)}, which {verb} not finished")
    scale = _flops(done[reference.name]) / _flops(done[own.name])
    return float(f"{epochs * scale:.4g}")


def _flops(summary: dict[str, Any]) -> float:
    return float(summary["training_cost"]["flops"])


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


def run_peer(framework: str, options: dict[str, Any], out: Path) -> None:
    from .peer import train_spikingjelly

    if framework != "spikingjelly":
        raise ValueError(f"no peer framework {framework!r}")
    train_spikingjelly(options, out)


def unfinished(budget: Budget, out_dir: str | Path) -> list[str]:
    """The runs of the budget without a summary in out_dir yet."""
    return [run.name for run in grid(budget) if not (Path(out_dir) / "runs" / run.name / "summary.json").exists()]


def run_sweep(budget: Budget, out_dir: str | Path, data_dir: str | None = None, in_process: bool = False,
              log: Callable[[str], None] = print, run_missing: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Runs (or skips, or resumes) every run of the budget; returns their summaries with the run's spec. A
    peer whose framework is not installed is skipped with a line in the log. run_missing=False runs nothing:
    the summaries of the finished runs only (a table of a sweep still under way)."""
    from .peer import spikingjelly_available

    out_dir = Path(out_dir)
    runner = run_in_process if in_process else run_as_process
    summaries, done = [], {}
    runs = grid(budget)
    for index, run in enumerate(runs, 1):
        out = out_dir / "runs" / run.name
        summary_file = out / "summary.json"
        if not summary_file.exists():
            if not run_missing:
                log(f"[{index}/{len(runs)}] {run.name}: not finished, left out")
                continue
            if run.framework == "spikingjelly" and not spikingjelly_available():
                log(f"[{index}/{len(runs)}] {run.name}: skipped, SpikingJelly is not installed")
                continue
            out.mkdir(parents=True, exist_ok=True)
            options = train_options(budget, run, data_dir, done)
            resume = (out / "checkpoint.pt").exists() and run.framework == "ndsnn"
            log(f"[{index}/{len(runs)}] {run.name}{' (resuming)' if resume else ''}")
            if run.framework != "ndsnn":
                run_peer(run.framework, options, out)
            else:
                runner(options, out, resume)
        summary = json.loads(summary_file.read_text())
        done[run.name] = summary
        summaries.append({**summary, "run": run.to_dict()})
    return summaries
