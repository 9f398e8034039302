"""The sweep's plots: accuracy against sparsity (mean and spread over seeds, dense as a line) and accuracy
against training cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_sweep(rows: list[dict[str, Any]], directory: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    methods = sorted({r["method"] for r in rows if r["method"] != "dense"})
    dense = next((r for r in rows if r["method"] == "dense"), None)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method in methods:
        points = sorted((r for r in rows if r["method"] == method), key=lambda r: r["target_sparsity"])
        axis.errorbar([100 * r["target_sparsity"] for r in points], [100 * r["accuracy_mean"] for r in points],
                      yerr=[100 * r["accuracy_std"] for r in points], marker="o", capsize=3, label=method)  # fmt: skip
    if dense is not None:
        axis.axhline(100 * dense["accuracy_mean"], color="black", linestyle="--", label="dense")
    axis.set(xlabel="target sparsity (%)", ylabel="test accuracy (%)")
    accuracy_path = _save(plt, figure, axis, directory / "accuracy_vs_sparsity.png")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for method in [*methods, *(["dense"] if dense else [])]:
        points = [r for r in rows if r["method"] == method]
        axis.scatter([100 * r["flops_relative_to_dense"] for r in points], [100 * r["accuracy_mean"] for r in points],
                     label=method)  # fmt: skip
    axis.set(xscale="log", xlabel="training FLOPs (% of dense training)", ylabel="test accuracy (%)")
    return [accuracy_path, _save(plt, figure, axis, directory / "accuracy_vs_cost.png")]


def _save(plt, figure, axis, path: Path) -> Path:
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
