"""PNG plots of a finished run, from its metrics log: accuracy and loss curves, density over training,
per-layer density, and per-layer spike rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_run(records: list[dict[str, Any]], summary: dict[str, Any], directory: str | Path) -> list[Path]:
    """Writes the plots into `directory`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    steps = [r for r in records if r.get("kind") == "step"]
    written = []

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["epoch"] for r in epochs]
    loss_axis.plot(x, [r["train_loss"] for r in epochs], label="train")
    loss_axis.plot(x, [r["test_loss"] for r in epochs], label="test")
    loss_axis.set(xlabel="epoch", ylabel="loss (mean over T of cross-entropy)")
    accuracy_axis.plot(x, [100 * r["train_accuracy"] for r in epochs], label="train")
    accuracy_axis.plot(x, [100 * r["test_accuracy"] for r in epochs], label="test")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)")
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    written.append(_save(figure, directory / "curves.png", plt))

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([r["step"] for r in steps], [r["density"] for r in steps])
    axis.set(xlabel="step", ylabel="density (kept weights / all)", title=summary.get("method", ""))
    axis.grid(alpha=0.3)
    written.append(_save(figure, directory / "density.png", plt))

    bars = (("layer_density", "layer_density.png", "density"),
            ("spike_rates", "spike_rates.png", "spike rate (fraction of neurons per step)"))  # fmt: skip
    for key, name, label in bars:
        values = summary.get(key, {})
        figure, axis = plt.subplots(figsize=(max(6, 0.35 * len(values) + 2), 4))
        axis.bar(range(len(values)), list(values.values()))
        axis.set_xticks(range(len(values)), list(values), rotation=70, ha="right", fontsize=7)
        axis.set(ylabel=label)
        axis.grid(alpha=0.3, axis="y")
        written.append(_save(figure, directory / name, plt))
    return written


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
