"""The `ndsnn` command line: thin, it parses and calls into the library.

    ndsnn train [--config FILE] [options]     train a sparse SNN (defaults: NDSNN, 90% sparsity, digits)
    ndsnn evaluate --checkpoint FILE          test accuracy of a checkpoint or compact model
    ndsnn export --checkpoint FILE --out F    the compact form of a trained model (--format nir: a NIR graph)
    ndsnn info                                versions, compiled kernels, devices

Bad arguments, data files or checkpoints end with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """What ends a command with one line and exit code 2: bad input (options, files, settings), a run that
    diverged, and errors of the file system (a full or read-only disk, a path that is not a directory)."""
    from .data import DataFileError
    from .settings import SettingsError
    from .train import CheckpointError, ConfigError
    from .train.trainer import TrainingDiverged

    return (UsageError, ConfigError, CheckpointError, DataFileError, SettingsError, TrainingDiverged, OSError)


def one_line(error: BaseException) -> str:
    """The error's message on one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message: only the original message (its last line) is kept."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        last = lines[-1]
        name, sep, message = last.partition(": ")
        lines = [message if sep and "." in name and " " not in name else last]
    return " ".join(lines) or type(error).__name__


def check_environment() -> None:
    """The NDSNN_* settings every command depends on, checked before any work (SettingsError names one)."""
    from . import _extension, settings
    from .ops import crossover, dispatch

    settings.kernel_policy()
    settings.cpu_allocator_policy()
    settings.check_cache_dir()
    crossover.check_settings()
    dispatch.policy()
    _extension.load()


def _info(args: argparse.Namespace) -> int:
    from .info import collect, format_info

    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def epochs_value(text: str) -> int | float:
    """--epochs: a number of epochs, an int when whole (20, not 20.0, in configs and summaries); its range is
    checked with the other settings (one line naming it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of epochs, got {text!r}") from None
    return int(value) if value.is_integer() else value


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--method-option expects KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def train_config(args: argparse.Namespace):
    """Defaults, then the --config file, then the options given on the command line."""
    from .train import TrainConfig, load_config_file
    from .train.checkpoint import load_checkpoint
    from .train.trainer import CHECKPOINT_NAME

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.field_names()}
    if "method_option" in vars(args):
        given["method_options"] = dict(_parse_option(text) for text in args.method_option)
    values: dict[str, Any] = {}
    if args.resume is not None:  # the run's own options; the command line may change runtime ones only
        from pathlib import Path

        path = Path(args.resume) if args.resume != "auto" else Path(given.get("out") or "") / CHECKPOINT_NAME
        if args.resume == "auto" and not given.get("out"):
            raise UsageError("--resume without a path needs --out (the run's directory)")
        saved = load_checkpoint(path)["config"]
        saved.pop("stop_after_steps", None)  # a stop applies to the run that asked for it
        saved.pop("out", None)  # a resumed run writes beside its checkpoint, or into --out
        if args.config:
            raise UsageError("--resume takes the run's options from its checkpoint; --config cannot be given too")
        refuse_changed_options(path, saved, given)
        values.update(saved)
    if args.config:
        values.update(load_config_file(args.config))
    values.update(given)
    return TrainConfig.from_dict(values, source=args.config or "options")


def refuse_changed_options(path, saved: dict[str, Any], given: dict[str, Any]) -> None:
    """A resumed run keeps the options it was trained with; only runtime options may be given again."""
    from .train.trainer import RUNTIME_OPTIONS

    changed = sorted(k for k, v in given.items() if k not in RUNTIME_OPTIONS and k in saved and saved[k] != v)
    if changed:
        raise UsageError(f"--resume: {path} was trained with other options: "
                         + ", ".join(f"{k}={saved[k]!r} (now {given[k]!r})" for k in changed)
                         + f"; only {', '.join(RUNTIME_OPTIONS)} may change")  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    from .train import json_safe
    from .train.run import train

    config = train_config(args)
    summary = train(config, resume=args.resume, overwrite=args.overwrite, plots=not args.no_plots,
                    verbose=not args.json)  # fmt: skip
    if args.json and summary is not None:
        print(json_safe.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .train import evaluate_file, json_safe

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    result = evaluate_file(args.checkpoint, args.data_dir, args.device, args.batch_size)
    if args.json:
        print(json_safe.dumps(result, indent=2))
    else:
        print(f"{result['checkpoint']}: {result['dataset']} test accuracy {100 * result['test_accuracy']:.2f}% "
              f"({result['samples']} samples), loss {result['test_loss']:.4f}, sparsity "
              f"{100 * result['sparsity']:.2f}%")  # fmt: skip
    return 0


def _export(args: argparse.Namespace) -> int:
    import os

    import torch

    from .nn.convert import masked_modules
    from .train import export_compact, load_model
    from .train.trainer import overall_density

    if args.dt is not None and args.format != "nir":
        raise UsageError("--dt applies to --format nir only")
    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        raise UsageError(f"--dt must be a positive number of seconds, got {args.dt}")
    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a directory; give the file to write, e.g. {args.out}/model.pt")
    if args.format == "nir":
        try:
            from .nir import DEFAULT_DT, UnsupportedLayerError, export_nir
            from .nir.errors import require_nir

            require_nir()
        except ImportError as error:
            raise UsageError(f"--format nir needs the nir package (pip install nir): {error}") from error
    model, spec, dataset = load_model(args.checkpoint, torch.device("cpu"))
    if args.format == "compact":
        path = export_compact(model, spec, dataset, args.out)
        layers = [layer for _, layer in masked_modules(model)]
        density = f", density {100 * overall_density(layers):.2f}% of the masked weights" if layers else ""
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB{density})")
        return 0
    frame = (spec["in_channels"], spec["image_size"], spec["image_size"])
    try:
        report = export_nir(model, args.out, frame, dt=args.dt or DEFAULT_DT, timesteps=spec["timesteps"])
    except UnsupportedLayerError as error:
        raise UsageError(str(error)) from error
    except OSError as error:
        raise UsageError(f"cannot write {args.out}: {error}") from error
    print(f"wrote {report.path} (NIR graph, {report.nodes} nodes, dt {report.dt:g} s, {spec['timesteps']} steps; "
          f"{report.nonzero:,} of {report.total:,} weights nonzero, density {100 * report.density:.2f}%; "
          f"{os.path.getsize(report.path) / 1e6:.2f} MB)")  # fmt: skip
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from .reproduce import BUDGETS, run_sweep
    from .reproduce.report import write_report
    from .reproduce.sweep import unfinished

    budget = BUDGETS[args.budget]
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in
               (("methods", args.methods), ("sparsities", args.sparsities), ("seeds", args.seeds),
                ("epochs", args.epochs), ("timesteps", args.timesteps), ("train_samples", args.train_samples))
               if v is not None}  # fmt: skip
    budget = dataclasses.replace(budget, **changes)
    try:
        budget.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = Path(args.out or f"runs/reproduce-{budget.dataset}-{budget.name}")
    summaries = run_sweep(budget, out, args.data_dir, in_process=args.in_process, run_missing=not args.report_only)
    missing = unfinished(budget, out)
    results = write_report(summaries, {**budget.to_dict(), "unfinished_runs": missing}, out)
    print((out / "results.md").read_text())
    print(f"results in {out}: results.json, results.md, " + ", ".join(Path(p).name for p in results["plots"]))
    return 0


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from .data import DATASETS
    from .models import MODELS
    from .sparse import DISTRIBUTIONS, METHODS
    from .train.config import OPTIMIZERS, SCHEDULES

    S = argparse.SUPPRESS  # only options given on the command line override the config file
    add = parser.add_argument
    add("--config", default=None, help="YAML or JSON file of options (names as below, - or _)")
    add("--model", choices=list(MODELS), default=S, help="network (default convnet)")
    add("--dataset", choices=list(DATASETS), default=S, help="data set (default digits)")
    add("--data-dir", default=S, help="the one place data files are read from (else $NDSNN_DATA, else system folders)")
    add("--method", choices=list(METHODS), default=S, help="sparsity method (default ndsnn)")
    add("--sparsity", type=float, default=S, help="final fraction of pruned weights, in [0, 1) (default 0.9)")
    add("--init-density", type=float, default=S, help="initial density of ndsnn / pq_index (0.5), criticality (1.0)")
    add("--distribution", choices=list(DISTRIBUTIONS), default=S, help="per-layer densities (default erk)")
    add("--update-interval", type=int, default=S, help="steps between mask updates (default total/25, <= 100)")
    add("--method-option", action="append", default=S, metavar="KEY=VALUE",
        help="another keyword argument of the method, e.g. drop_fraction=0.5 (repeatable)")  # fmt: skip
    add("--epochs", type=epochs_value, default=S,
        help="epochs, a fraction allowed (per round for a method that trains in rounds, lth; default 20)")  # fmt: skip
    add("--timesteps", type=int, default=S, help="simulation time steps T (default 4)")
    add("--batch-size", type=int, default=S, help="batch size per process (default 64)")
    add("--lr", type=float, default=S, help="initial learning rate (default 0.1)")
    add("--optimizer", choices=list(OPTIMIZERS), default=S, help="default sgd (momentum 0.9)")
    add("--momentum", type=float, default=S, help="SGD momentum (default 0.9)")
    add("--weight-decay", type=float, default=S, help="default 5e-4")
    add("--schedule", choices=list(SCHEDULES), default=S, help="learning-rate schedule (default cosine)")
    add("--seed", type=int, default=S, help="default 0")
    add("--out", default=S, help="output directory (default runs/<dataset>-<model>-<method>-s<sparsity>-seed<seed>)")
    add("--device", default=S, help="auto, cpu, cuda or cuda:N (default auto)")
    add("--workers", type=int, default=S, help="data-loading processes (default 0)")
    add("--amp", action="store_true", default=S, help="bfloat16 autocast")
    add("--checkpoint-interval", type=int, default=S, help="steps between checkpoints besides epoch ends (0: none)")
    add("--log-interval", type=int, default=S, help="steps between metric lines (default 10)")
    add("--no-progress", dest="progress", action="store_false", default=S, help="no progress bars")
    add("--debug-masks", action="store_true", default=S, help="check masks are equal on all ranks at every update")
    add("--deterministic", action="store_true", default=S,
        help="deterministic GPU algorithms: a resumed run repeats an uninterrupted one exactly (slower)")  # fmt: skip
    add("--train-samples", type=int, default=S, help="train on a fixed random subset of this size (quick runs)")
    add("--test-samples", type=int, default=S, help="evaluate on a fixed random subset of this size")
    add("--stop-after-steps", type=int, default=S, help="checkpoint and stop at this step; --resume goes on")
    add("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="continue a run from its checkpoint (no path: --out's checkpoint.pt)")  # fmt: skip
    add("--overwrite", action="store_true", help="start again in an --out that holds a checkpoint")
    add("--no-plots", action="store_true", help="skip the PNG plots")
    add("--json", action="store_true", help="print the summary as JSON")


def _add_reproduce_options(parser: argparse.ArgumentParser) -> None:
    from .reproduce import BUDGETS, sweep_methods

    add = parser.add_argument
    add("dataset", choices=["fashion-mnist"], help="the comparison's data set")
    add(
        "--budget",
        choices=list(BUDGETS),
        default="cpu",
        help="cpu: subsets, 3 epochs, T=2; full: all of Fashion-MNIST, 2 epochs, T=4, Adam, 90 and 99%% (about "
        "three hours on 2 cores); gpu: full data, 30 epochs, T=4",
    )
    add("--methods", nargs="+", choices=list(sweep_methods()), default=None, help="default: the budget's")
    add("--sparsities", nargs="+", type=float, default=None, help="default 0.9 0.95 0.98 0.99")
    add("--seeds", nargs="+", type=int, default=None, help="default: the budget's (at least 2)")
    add("--epochs", type=epochs_value, default=None, help="epochs of every run (per round for lth)")
    add("--timesteps", type=int, default=None)
    add("--train-samples", type=int, default=None)
    add("--data-dir", default=None)
    add("--out", default=None, help="sweep directory (default runs/reproduce-<dataset>-<budget>); rerun to resume")
    add("--in-process", action="store_true", help="run the trainings in this process (default: one process each)")
    add("--report-only", action="store_true",
        help="run nothing: the table of the runs finished so far (the others listed as unfinished)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ndsnn", description="Sparse spiking neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a sparse spiking network",
                                description="Train a sparse SNN. With no options: NDSNN at 90%% sparsity on "
                                "scikit-learn's digits with the small convnet.")  # fmt: skip
    _add_train_options(train)
    train.set_defaults(run=_train)
    evaluate = commands.add_parser("evaluate", help="test accuracy of a checkpoint or compact model")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt or model_compact.pt")
    evaluate.add_argument("--data-dir", default=None)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=_evaluate)
    export = commands.add_parser("export", help="write a trained model in compact form or as a NIR graph",
                                 description="Write a trained model: compact (kept weights and their indices, "
                                 "for ndsnn) or nir (a NIR graph for neuromorphic tools, batch norm folded, "
                                 "pruned weights exactly zero). Prints the weights' density.")  # fmt: skip
    export.add_argument("--checkpoint", required=True, help="checkpoint.pt or model_compact.pt")
    export.add_argument("--out", required=True, help="file to write (e.g. model_compact.pt or model.nir)")
    export.add_argument("--format", choices=["compact", "nir"], default="compact", help="default compact")
    export.add_argument("--dt", type=float, default=None,
                        help="nir: seconds per time step that NIR time constants refer to (default 1e-4)")  # fmt: skip
    export.set_defaults(run=_export)
    reproduce = commands.add_parser("reproduce", help="compare every method on Fashion-MNIST (a resumable sweep)")
    _add_reproduce_options(reproduce)
    reproduce.set_defaults(run=_reproduce)
    info = commands.add_parser("info", help="versions, compiled kernels and devices")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_environment()
        return args.run(args)
    except _user_errors() as error:
        print(f"ndsnn {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
