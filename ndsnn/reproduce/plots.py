"""The sweep's plots: accuracy against sparsity (mean and spread over seeds, dense as a line) and accuracy
against training cost, one curve per row kind (a method, a method at another's cost) over the sparsities."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_sweep(rows: list[dict[str, Any]], directory: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = list(dict.fromkeys(r["method"] for r in rows if r["base_method"] != "dense"))
    dense = [r for r in rows if r["base_method"] == "dense"]

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        points = sorted((r for r in rows if r["method"] == label), key=lambda r: r["target_sparsity"])
        axis.errorbar([100 * r["target_sparsity"] for r in points], [100 * r["accuracy_mean"] for r in points],
                      yerr=[100 * r["accuracy_std"] for r in points], marker="o", capsize=3, label=label,
                      linestyle="--" if points[0]["cost_of"] else "-")  # fmt: skip
    for row, style in zip(dense, ("--", ":", "-."), strict=False):
        axis.axhline(100 * row["accuracy_mean"], color="black", linestyle=style, label=row["method"])
    axis.set(xlabel="target sparsity (%)", ylabel="test accuracy (%)")
    accuracy_path = _save(plt, figure, axis, directory / "accuracy_vs_sparsity.png")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        points = sorted((r for r in rows if r["method"] == label), key=lambda r: r["flops_relative_to_dense_run"])
        axis.plot([100 * r["flops_relative_to_dense_run"] for r in points], [100 * r["accuracy_mean"] for r in points],
                  marker="o", label=label, linestyle="--" if points[0]["cost_of"] else "-")  # fmt: skip
        for r in points:
            axis.annotate(f"{100 * r['target_sparsity']:g}%", (100 * r["flops_relative_to_dense_run"],
                          100 * r["accuracy_mean"]), fontsize=6, textcoords="offset points", xytext=(3, 3))  # fmt: skip
    for row in dense:
        axis.scatter([100 * row["flops_relative_to_dense_run"]], [100 * row["accuracy_mean"]], marker="*", s=80,
                     label=row["method"])  # fmt: skip
    axis.set(xscale="log", xlabel="training FLOPs (% of the dense run's)", ylabel="test accuracy (%)",
             title="each curve: one method over the target sparsities")  # fmt: skip
    return [accuracy_path, _save(plt, figure, axis, directory / "accuracy_vs_cost.png")]


def _save(plt, figure, axis, path: Path) -> Path:
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
