"""The papers' setups: VGG-16 and ResNet-19 on CIFAR-10, CIFAR-100 and TinyImageNet, one config file each in
configs/papers/, the command that runs each method at each sparsity, and the figures the papers report.

The settings follow the NDSNN paper (Huang et al., DAC 2023) and the setup it is compared in, Kim et al.'s
(ECCV 2022). Every setting and every reported figure names its source; a figure that could not be read in a
source is None with a note that says so, never a guess.

    python -m ndsnn.reproduce.papers > configs/papers/README.md      the table of configs, commands and figures
    python -m ndsnn.reproduce.papers --write configs/papers           the config files and that README
    python -m ndsnn.reproduce.papers --compare runs/*/summary.json    measured against reported
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = "configs/papers"  # relative to the repository root, where the commands are run
SPARSITIES: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99)
METHODS: tuple[str, ...] = ("ndsnn", "lth", "set", "rigl", "dense")  # the NDSNN paper's comparison
GLOBAL_BATCH = 128
NOT_FOUND = "not found in the sources read"

NDSNN_PAPER = (
    'Huang et al., "Neurogenesis Dynamics-inspired Spiking Neural Network Training Acceleration", DAC 2023, '
    "arXiv:2304.12214"
)
NDSNN_URL = "https://arxiv.org/abs/2304.12214"
KIM_PAPER = 'Kim et al., "Exploring Lottery Ticket Hypothesis in Spiking Neural Networks", ECCV 2022, arXiv:2207.01382'
KIM_CODE = "https://github.com/Intelligent-Computing-Lab-Yale/Exploring-Lottery-Ticket-Hypothesis-in-SNNs"
SOURCES: dict[str, str] = {
    "ndsnn-abstract": f"{NDSNN_PAPER}, abstract ({NDSNN_URL})",
    "ndsnn-tables": f"{NDSNN_PAPER}, results tables ({NDSNN_URL}); not read",
    "kim-code": f"{KIM_PAPER}; the authors' code, {KIM_CODE}, config_lth.py and train_snn_laterewindlth.py",
}

# Kim et al.'s LTH (their code): 25% of the remaining weights pruned per round by global magnitude, 300 epochs a
# round, weights rewound to their values after epoch 20 of the first round.
LTH_PRUNE_RATE = 0.25
LTH_REWIND_EPOCH = 20


@dataclass(frozen=True)
class Setting:
    """One option of the config files, its value and where the value comes from."""

    name: str
    value: Any
    source: str


SETTINGS: tuple[Setting, ...] = (
    Setting("method", "ndsnn", "the paper's method; --method set, rigl, lth or static for the others"),
    Setting("sparsity", 0.99, "99%: NDSNN abstract; 90/95/98% with --sparsity"),
    Setting("epochs", 300, "Kim et al. code default (--end_iter 300); the NDSNN paper's value not read"),
    Setting("timesteps", 5, "Kim et al. code default (--timestep 5); the NDSNN paper's value not read"),
    Setting("batch_size", 128, "Kim et al. code default; per process: under torchrun pass 128 / processes"),
    Setting("optimizer", "sgd", "Kim et al. code default"),
    Setting("lr", 0.1, "Kim et al. code default (its README's commands pass 0.3)"),
    Setting("momentum", 0.9, "Kim et al. code default"),
    Setting("weight_decay", 0.0005, "Kim et al. code default"),
    Setting("schedule", "cosine", "Kim et al. code default (cosine to 0 over the epochs)"),
    Setting("distribution", "erk", "this library's default; the NDSNN paper's layer densities not read"),
)

SETTING_VALUES: dict[str, Any] = {s.name: s.value for s in SETTINGS}

DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny-imagenet": "TinyImageNet"}
MODEL_TITLES = {"vgg16": "VGG-16", "resnet19": "ResNet-19"}
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "tiny-imagenet": 100_000}


@dataclass(frozen=True)
class Setup:
    """One (data set, model) pair of the papers, with its config file."""

    dataset: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}"

    @property
    def path(self) -> str:
        return f"{CONFIG_DIR}/{self.name}.yaml"

    @property
    def title(self) -> str:
        return f"{DATASET_TITLES[self.dataset]}, {MODEL_TITLES[self.model]}"

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch at the global batch of 128 (the same under torchrun with 128 / N per process)."""
        return math.ceil(TRAIN_IMAGES[self.dataset] / GLOBAL_BATCH)

    def options(self) -> dict[str, Any]:
        """The options the config file holds, as `ndsnn train` reads them."""
        return {"model": self.model, "dataset": self.dataset, **SETTING_VALUES}


SETUPS: tuple[Setup, ...] = tuple(
    Setup(dataset, model) for dataset in ("cifar10", "cifar100", "tiny-imagenet") for model in ("vgg16", "resnet19")
)


def setup(name: str) -> Setup:
    """The setup called `name` (e.g. "cifar10-vgg16")."""
    for candidate in SETUPS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no setup {name!r}; known: {', '.join(s.name for s in SETUPS)}")


def lth_rounds(sparsity: float) -> int:
    """LTH's training rounds to reach `sparsity` at 25% per round, the dense first round included."""
    return math.ceil(math.log(1.0 - sparsity) / math.log(1.0 - LTH_PRUNE_RATE)) + 1 if sparsity > 0 else 1


def method_arguments(item: Setup, method: str) -> list[str]:
    """The options that select `method` on top of the config file (which names ndsnn)."""
    if method == "ndsnn":
        return []
    if method in ("set", "rigl"):
        return ["--method", method]
    if method == "lth":
        rewind_step = LTH_REWIND_EPOCH * item.steps_per_epoch
        return ["--method", "lth", "--method-option", f"prune_rate={LTH_PRUNE_RATE}", "--method-option",
                f"rewind_step={rewind_step}"]  # fmt: skip
    if method == "dense":
        return ["--method", "static"]
    raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def command(item: Setup, method: str = "ndsnn", sparsity: float = 0.99, processes: int = 1) -> list[str]:
    """The command line that trains `method` at `sparsity` in this setup (dense: sparsity 0).

    processes > 1: under torchrun, with the per-process batch that keeps the global batch of 128.
    """
    if processes < 1 or GLOBAL_BATCH % processes:
        raise ValueError(f"processes must divide the global batch {GLOBAL_BATCH}, got {processes}")
    if processes == 1:
        words = ["ndsnn", "train"]
    else:
        words = ["torchrun", "--standalone", f"--nproc_per_node={processes}", "-m", "ndsnn", "train"]
    words += ["--config", item.path, *method_arguments(item, method)]
    words += ["--sparsity", "0" if method == "dense" else f"{sparsity:g}"]
    if processes > 1:
        words += ["--batch-size", str(GLOBAL_BATCH // processes)]
    return words


@dataclass(frozen=True)
class Reported:
    """A figure a paper reports for a setup. value is None where it could not be read (note says so)."""

    setup: str
    quantity: str  # "accuracy" (test, %), "cost_vs_lth" (NDSNN's training cost, % of LTH's), "gain" (points)
    method: str
    sparsity: float | None  # None: the source does not say
    value: float | None
    source: str  # a key of SOURCES
    note: str = ""


CLAIMS: tuple[Reported, ...] = (
    Reported("cifar10-resnet19", "cost_vs_lth", "ndsnn", None, 40.89, "ndsnn-abstract",
             "NDSNN's training cost is 40.89% of LTH's; the abstract names no sparsity"),
    Reported("cifar10-vgg16", "cost_vs_lth", "ndsnn", None, 31.35, "ndsnn-abstract",
             "NDSNN's training cost is 31.35% of LTH's; the abstract names no sparsity"),
    Reported("tiny-imagenet-resnet19", "gain", "ndsnn", 0.99, 20.52, "ndsnn-abstract",
             "up to 20.52% improvement in accuracy over the other methods (LTH, SET-SNN, RigL-SNN)"),
)  # fmt: skip


def reported() -> list[Reported]:
    """Every figure: the abstract's claims, and each accuracy of the results tables (not read: None)."""
    figures = list(CLAIMS)
    for item in SETUPS:
        for method in METHODS:
            for sparsity in (0.0,) if method == "dense" else SPARSITIES:
                figures.append(Reported(item.name, "accuracy", method, sparsity, None, "ndsnn-tables", NOT_FOUND))
    return figures


def accuracy(item: Setup, method: str, sparsity: float) -> Reported | None:
    """The reported test accuracy entry of `method` at `sparsity` in this setup (its value may be None)."""
    for figure in reported():
        if (figure.setup, figure.quantity, figure.method) == (item.name, "accuracy", method) and math.isclose(
            figure.sparsity or 0.0, sparsity
        ):
            return figure
    return None


def _yaml_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def render_config(item: Setup) -> str:
    """The YAML file of a setup: its options, each with where its value comes from."""
    example = " ".join(command(item))
    lines = [
        f"# {item.title}: the setup of the NDSNN paper (Huang et al., DAC 2023) and of Kim et al. (ECCV 2022).",
        "# Written by `python -m ndsnn.reproduce.papers --write configs/papers`: change papers.py, not this file.",
        "# Run from the repository root, with --data-dir DIR or $NDSNN_DATA pointing at the data set:",
        f"#   {example}",
        "# Other sparsities: --sparsity 0.9 | 0.95 | 0.98; other methods and several GPUs: see README.md here.",
    ]
    entries = [("model", item.model, "NDSNN abstract"), ("dataset", item.dataset, "NDSNN abstract")]
    entries += [(s.name, s.value, s.source) for s in SETTINGS]
    width = max(len(f"{name}: {_yaml_value(value)}") for name, value, _ in entries) + 2
    lines += [f"{f'{name}: {_yaml_value(value)}':<{width}}# {source}" for name, value, source in entries]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "n/f" if value is None else f"{value:.2f}"


def _code(words: Sequence[str]) -> str:
    return "`" + " ".join(words) + "`"


def render_readme() -> str:
    """configs/papers/README.md: how to run each setup, the settings and their sources, the reported figures."""
    first = SETUPS[0]
    lth = method_arguments(first, "lth")
    out = [
        "# The papers' setups",
        "",
        "<!-- Written by `python -m ndsnn.reproduce.papers > configs/papers/README.md`; change papers.py. -->",
        "",
        "VGG-16 and ResNet-19 on CIFAR-10, CIFAR-100 and TinyImageNet at 90, 95, 98 and 99% sparsity, as in the "
        "NDSNN paper [1], with the training setup of Kim et al. [2], the work NDSNN compares against. One file per "
        "(data set, model); one command per run. Run them from the repository root; the data set is read from "
        "`--data-dir DIR` or `$NDSNN_DATA` (`cifar-10-batches-py/`, `cifar-100-python/`, `tiny-imagenet-200/`).",
        "",
        "## Running",
        "",
        f"- NDSNN at 99%: {_code(command(first))}; other sparsities: `--sparsity 0.9`, `0.95`, `0.98`.",
        "- The other methods, same settings: `--method set`, `--method rigl`; the dense network: "
        "`--method static --sparsity 0`.",
        f"- LTH as Kim et al. ran it [2]: {_code(lth)}: 25% of the remaining weights pruned per round by global "
        f"magnitude, `--epochs` (300) per round, weights rewound to their values after epoch {LTH_REWIND_EPOCH} of "
        f"the first round ({LTH_REWIND_EPOCH} epochs x {first.steps_per_epoch} steps on CIFAR, "
        f"x {setup('tiny-imagenet-vgg16').steps_per_epoch} on TinyImageNet). At 99% that is {lth_rounds(0.99)} rounds, "
        f"{SETTING_VALUES['epochs'] * lth_rounds(0.99)} epochs; "
        "Kim et al.'s later rounds train 280 epochs each, here every round trains `--epochs`.",
        f"- Several GPUs: {_code(command(first, processes=4))}. `--batch-size` is per process: pass 128 / N for "
        "N processes to keep the papers' global batch of 128 (and the steps per epoch, which LTH's `rewind_step` "
        "counts). On several machines, replace `--standalone` by torchrun's `--nnodes`, `--rdzv_backend c10d` and "
        "`--rdzv_endpoint HOST:PORT`.",
        "- Every run writes `runs/<dataset>-<model>-<method>-s<sparsity>-seed<seed>/summary.json` (or `--out`); "
        "`python -m ndsnn.reproduce.papers --compare runs/*/summary.json` sets the measured accuracies and cost "
        "ratios beside the reported ones below.",
        "",
        "## Settings",
        "",
        "The same in every file, besides `model` and `dataset`. Where the NDSNN paper's own value could not be "
        "read, the value is Kim et al.'s code default [2]. Neurons as Kim et al.: LIF, leak 0.75 (tau 4/3), "
        "threshold 1, hard reset, direct encoding (the models' defaults). NDSNN starts at density 0.5 (its "
        "`init_density` default) and updates masks every 100 steps (the default at these lengths); the paper's "
        "values were not read. Kim et al. train under float16 autocast; `--amp` (bfloat16) is the nearest here.",
        "",
        "| option | value | source |",
        "|---|---|---|",
    ]
    out += [f"| `{s.name}` | {_yaml_value(s.value)} | {s.source} |" for s in SETTINGS]
    out += [
        "",
        "## Reported accuracy",
        "",
        "Test accuracy (%) the papers report at each sparsity. n/f: " + NOT_FOUND + " (the NDSNN paper's results "
        "tables could not be read); the commands are for sparsity S.",
        "",
        "| config | method | command | 90% | 95% | 98% | 99% | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in SETUPS:
        for method in METHODS:
            words = command(item, method, 0.99)
            if method != "dense":
                words[words.index("--sparsity") + 1] = "S"
            cells = [accuracy(item, method, 0.0 if method == "dense" else s) for s in SPARSITIES]
            values = [_percent(c.value if c else None) for c in cells]
            if method == "dense":
                values = [values[0], "", "", ""]
            out.append(f"| `{item.path}` | {method} | {_code(words)} | " + " | ".join(values) + " | [1] |")
    out += [
        "",
        "## Reported claims",
        "",
        "| config | claim | sparsity | reported | source |",
        "|---|---|---|---|---|",
    ]
    for claim in CLAIMS:
        sparsity = "not stated" if claim.sparsity is None else f"{100 * claim.sparsity:g}%"
        out.append(f"| `{setup(claim.setup).path}` | {claim.note} | {sparsity} | {_percent(claim.value)} | [1] |")
    out += [
        "",
        "How the NDSNN paper counts training cost could not be read; ndsnn's `training_cost.flops` counts the "
        "FLOPs of every training step at each layer's density (all of LTH's rounds included).",
        "",
        "## Sources",
        "",
        f"1. {NDSNN_PAPER}. {NDSNN_URL}. Read: the abstract.",
        f"2. {KIM_PAPER}. Read: the authors' code, {KIM_CODE} (`config_lth.py`, `train_snn_laterewindlth.py`, README).",
        "",
    ]
    return "\n".join(out)


def write(directory: str | Path) -> list[Path]:
    """Writes every setup's config file and the README into `directory`; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for item in SETUPS:
        path = directory / f"{item.name}.yaml"
        path.write_text(render_config(item))
        written.append(path)
    readme = directory / "README.md"
    readme.write_text(render_readme())
    return [*written, readme]


def _method_of(summary: dict[str, Any]) -> str:
    return "dense" if summary["method"] == "static" and summary["target_sparsity"] == 0 else summary["method"]


def compare(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Measured against reported: one row per (setup, method, target sparsity) over its runs (seeds), and one per
    claim that the runs can measure. Accuracies in %, gaps in points (measured - reported); None: unknown."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for summary in summaries:
        name = f"{summary['dataset']}-{summary['model']}"
        groups[(name, _method_of(summary), round(summary["target_sparsity"], 6))].append(summary)
    measured = {key: 100 * statistics.fmean(s["test_accuracy"] for s in runs) for key, runs in groups.items()}
    flops = {key: statistics.fmean(s["training_cost"]["flops"] for s in runs) for key, runs in groups.items()}
    known = {item.name for item in SETUPS}
    rows = []
    for (name, method, sparsity), value in sorted(measured.items()):
        figure = accuracy(setup(name), method, sparsity) if name in known else None
        paper = figure.value if figure else None
        rows.append({"setup": name, "quantity": "accuracy", "method": method, "sparsity": sparsity,
                     "runs": len(groups[(name, method, sparsity)]), "measured": value, "reported": paper,
                     "gap": None if paper is None else value - paper})  # fmt: skip
    for claim in CLAIMS:
        for name, method, sparsity in sorted(measured):
            if (name, method) != (claim.setup, "ndsnn") or (claim.sparsity and sparsity != claim.sparsity):
                continue
            if claim.quantity == "cost_vs_lth" and (name, "lth", sparsity) in flops:
                value = 100 * flops[(name, "ndsnn", sparsity)] / flops[(name, "lth", sparsity)]
            elif claim.quantity == "gain":
                others = [
                    measured[(name, m, sparsity)] for m in ("lth", "set", "rigl") if (name, m, sparsity) in measured
                ]
                if not others:
                    continue
                value = measured[(name, "ndsnn", sparsity)] - min(others)  # the largest gain over one of them
            else:
                continue
            rows.append({"setup": name, "quantity": claim.quantity, "method": "ndsnn", "sparsity": sparsity,
                         "runs": len(groups[(name, "ndsnn", sparsity)]), "measured": value, "reported": claim.value,
                         "gap": value - claim.value})  # fmt: skip
    return rows


QUANTITY_TITLES = {"accuracy": "test accuracy %", "cost_vs_lth": "training cost, % of LTH's",
                   "gain": "accuracy gain over the weakest of LTH/SET/RigL (points; the abstract says %)"}  # fmt: skip


def render_compare(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of compare() as a Markdown table."""
    out = ["| config | quantity | method | sparsity | runs | measured | reported | gap |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        gap = "n/f" if row["gap"] is None else f"{row['gap']:+.2f}"
        out.append(f"| {row['setup']} | {QUANTITY_TITLES[row['quantity']]} | {row['method']} | "
                   f"{100 * row['sparsity']:g}% | {row['runs']} | {row['measured']:.2f} | "
                   f"{_percent(row['reported'])} | {gap} |")  # fmt: skip
    out.append(f"\nn/f: {NOT_FOUND}.")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ndsnn.reproduce.papers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="DIR", help="write the config files and README.md into DIR")
    parser.add_argument("--compare", nargs="+", metavar="SUMMARY", help="summary.json files (or run directories)")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.write):
            print(path)
    elif args.compare:
        paths = [Path(p) / "summary.json" if Path(p).is_dir() else Path(p) for p in args.compare]
        print(render_compare(compare([json.loads(p.read_text()) for p in paths])), end="")
    else:
        print(render_readme(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
