"""What `ndsnn train` does around the Trainer: the output directory, the summary, plots, compact export and
the report printed at the end."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text
from .config import ConfigError, TrainConfig
from .export import export_compact, model_spec
from .json_safe import dumps
from .plots import plot_run
from .run_directory import RunDirectoryLock
from .trainer import CHECKPOINT_NAME, ScheduleWarning, Trainer


def default_out_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.dataset}-{config.model}-{config.method}-s{config.sparsity:g}-seed{config.seed}"


def choose_out_dir(config: TrainConfig, resume: str | None, overwrite: bool) -> tuple[Path, Path | None]:
    """(output directory, checkpoint to resume from). A new run never overwrites another's checkpoint:
    an explicit --out that holds one needs --resume or --overwrite; the default directory gets a numbered
    sibling (a single process only: under torchrun every rank must pick the same directory). A resumed run
    writes where its checkpoint is, or into --out when given (never where the run first lived)."""
    if resume is not None:
        if resume != "auto":
            checkpoint = Path(resume)
            return (Path(config.out) if config.out else checkpoint.parent), checkpoint
        out = Path(config.out) if config.out else default_out_dir(config)
        return out, out / CHECKPOINT_NAME
    if config.out:
        return Path(config.out), None
    base = default_out_dir(config)
    out, number = base, 1
    single = int(os.environ.get("WORLD_SIZE", "1")) <= 1
    while single and (out / CHECKPOINT_NAME).exists() and not overwrite:
        number += 1
        out = base.with_name(f"{base.name}-{number}")
    return out, None


def check_out_dir(out: Path, checkpoint: Path | None, overwrite: bool) -> None:
    """Refuses to write over another run's checkpoint in `out` (checked while holding the directory's lock)."""
    own = out / CHECKPOINT_NAME
    if overwrite or not own.exists():
        return
    if checkpoint is None:
        raise ConfigError(f"--out {out} holds a run's checkpoint; pass --resume to continue it or --overwrite "
                          "to start again")  # fmt: skip
    if own.resolve() != checkpoint.resolve():
        raise ConfigError(f"--out {out} holds another checkpoint; continue that run with --resume {own}, or pass "
                          f"--overwrite to replace it with the continuation of {checkpoint}")  # fmt: skip


def train(config: TrainConfig, resume: str | None = None, overwrite: bool = False, plots: bool = True,
          verbose: bool = True) -> dict[str, Any]:  # fmt: skip
    """Trains (or resumes) a run and writes its files; returns the summary. The output directory is locked
    for the whole run (rank 0 writes, so rank 0 locks)."""
    out, checkpoint = choose_out_dir(config, resume, overwrite)
    writer = int(os.environ.get("RANK", "0")) == 0
    with RunDirectoryLock(out) if writer else contextlib.nullcontext():
        check_out_dir(out, checkpoint, overwrite)
        with warnings.catch_warnings():
            if verbose:  # said here as one line instead
                warnings.simplefilter("ignore", ScheduleWarning)
            trainer = Trainer(config, out)
        if verbose and trainer.dist.is_main and trainer.schedule_warning:
            print(f"ndsnn train: warning: {trainer.schedule_warning}", file=sys.stderr, flush=True)
        try:
            summary = trainer.fit(checkpoint)
            if not summary["completed"]:
                if trainer.dist.is_main and verbose:
                    print(f"stopped at step {summary['steps']}; the checkpoint is {out / CHECKPOINT_NAME}: continue "
                          f"with ndsnn train --resume {out / CHECKPOINT_NAME}")  # fmt: skip
                return summary
            if trainer.dist.is_main:
                summary["outputs"] = write_outputs(trainer, summary, plots)
                if verbose:
                    print(report(summary, out))
            return summary
        finally:
            trainer.dist.close()


def write_outputs(trainer: Trainer, summary: dict[str, Any], plots: bool) -> dict[str, str]:
    out = trainer.out_dir
    outputs = {"checkpoint": str(out / CHECKPOINT_NAME), "metrics": str(out / "metrics.jsonl")}
    spec = model_spec(trainer.config.to_dict(), trainer.info)
    outputs["compact_model"] = str(
        export_compact(trainer.model, spec, trainer.config.dataset, out / "model_compact.pt")
    )
    if plots:
        written = plot_run(trainer.metrics.read(), summary, out / "plots")
        outputs["plots"] = ", ".join(str(p) for p in written)
    summary_path = out / "summary.json"
    atomic_write_text(summary_path, dumps({**summary, "outputs": outputs}, indent=2) + "\n")
    outputs["summary"] = str(summary_path)
    return outputs


def report(summary: dict[str, Any], out: Path) -> str:
    cost = summary["training_cost"]
    minutes, seconds = divmod(round(summary["wall_time_s"]), 60)
    rounds = f" over {summary['rounds']} rounds" if summary["rounds"] > 1 else ""
    return "\n".join([
        f"{summary['dataset']} / {summary['model']} / {summary['method']}: test accuracy "
        f"{100 * summary['test_accuracy']:.2f}% (best {100 * summary['best_test_accuracy']:.2f}%), sparsity "
        f"{100 * summary['sparsity']:.2f}% (target {100 * summary['target_sparsity']:.2f}%)",
        f"training cost: {cost['flops']:.3e} FLOPs ({100 * cost['flops_relative_to_dense']:.1f}% of dense "
        f"training), {cost['sops']:.3e} synaptic operations; {summary['steps']} steps{rounds} in "
        f"{minutes}m{seconds:02d}s",
        f"outputs in {out}: summary.json, metrics.jsonl, {CHECKPOINT_NAME}, model_compact.pt, plots/",
    ])  # fmt: skip


__all__ = ["check_out_dir", "choose_out_dir", "default_out_dir", "report", "train"]
