"""Turns a sweep's run summaries into one table (mean and spread over seeds per method and sparsity) and the
comparisons the papers claim: NDSNN's accuracy at the highest sparsity against SET, RigL and LTH, NDSNN's
training cost as a fraction of LTH's, and every method against the dense network at the lowest sparsity."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, target sparsity), over its seeds."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for summary in summaries:
        groups[(summary["run"]["method"], summary["run"]["sparsity"])].append(summary)
    lth_flops = {s: _mean([r["training_cost"]["flops"] for r in runs]) for (m, s), runs in groups.items() if m == "lth"}
    rows = []
    for (method, sparsity), runs in groups.items():
        accuracy = [r["test_accuracy"] for r in runs]
        flops = _mean([r["training_cost"]["flops"] for r in runs])
        rows.append({
            "method": method, "target_sparsity": sparsity, "seeds": sorted(r["run"]["seed"] for r in runs),
            "accuracy_mean": _mean(accuracy), "accuracy_std": _std(accuracy),
            "accuracy_min": min(accuracy), "accuracy_max": max(accuracy),
            "sparsity": _mean([r["sparsity"] for r in runs]),
            "flops": flops,
            "flops_relative_to_dense": _mean([r["training_cost"]["flops_relative_to_dense"] for r in runs]),
            "flops_relative_to_lth": flops / lth_flops[sparsity] if sparsity in lth_flops else None,
            "decision_ops": _mean([r["training_cost"].get("method_decision_ops", 0.0) for r in runs]),
            "spike_rate": _mean([_mean(list(r["spike_rates"].values())) for r in runs]),
            "wall_time_s": _mean([r["wall_time_s"] for r in runs]),
        })  # fmt: skip
    order = {m: i for i, m in enumerate(("dense", "static", "set", "rigl", "lth", "ndsnn", "criticality", "pq_index",
                                         "attention"))}  # fmt: skip
    return sorted(rows, key=lambda r: (r["target_sparsity"], order.get(r["method"], 99), r["method"]))


def claims(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The papers' claims, measured: differences in accuracy points and cost ratios (None when not run)."""
    cell = {(r["method"], r["target_sparsity"]): r for r in rows}
    sparsities = sorted({r["target_sparsity"] for r in rows if r["method"] != "dense"})
    result: dict[str, Any] = {}
    if sparsities:
        top, low = sparsities[-1], sparsities[0]
        ndsnn = cell.get(("ndsnn", top))
        result["ndsnn_vs_at_highest_sparsity"] = {
            "sparsity": top,
            **{other: (100 * (ndsnn["accuracy_mean"] - cell[(other, top)]["accuracy_mean"])
                       if ndsnn and (other, top) in cell else None) for other in ("set", "rigl", "lth")},
        }  # fmt: skip
        result["ndsnn_cost_fraction_of_lth"] = {
            s: cell[("ndsnn", s)]["flops_relative_to_lth"] for s in sparsities if ("ndsnn", s) in cell
        }
        dense = next((r for r in rows if r["method"] == "dense"), None)
        result["vs_dense_at_lowest_sparsity"] = {
            "sparsity": low,
            **{r["method"]: (100 * (r["accuracy_mean"] - dense["accuracy_mean"]) if dense else None)
               for r in rows if r["target_sparsity"] == low},
        }  # fmt: skip
    return result


def markdown(rows: list[dict[str, Any]], found: dict[str, Any], settings: dict[str, Any]) -> str:
    """The table and the claims as Markdown (what the README shows)."""
    lines = [
        "| method | target sparsity | test accuracy, mean ± std (seeds) | final sparsity | training FLOPs of dense "
        "| of LTH's | spike rate | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lth = f"{100 * r['flops_relative_to_lth']:.1f}%" if r["flops_relative_to_lth"] is not None else "-"
        lines.append(
            f"| {r['method']} | {100 * r['target_sparsity']:g}% | {100 * r['accuracy_mean']:.2f} ± "
            f"{100 * r['accuracy_std']:.2f} ({len(r['seeds'])}) | {100 * r['sparsity']:.2f}% | "
            f"{100 * r['flops_relative_to_dense']:.1f}% | {lth} | {r['spike_rate']:.3f} | {r['wall_time_s']:.0f} |"
        )
    top = found.get("ndsnn_vs_at_highest_sparsity", {})
    if top:
        lines += ["", f"At {100 * top['sparsity']:g}% sparsity NDSNN's accuracy minus the others' (points): "
                  f"{_signed(top)}."]  # fmt: skip
    cost = found.get("ndsnn_cost_fraction_of_lth", {})
    if cost:
        shares = ", ".join(f"{100 * s:g}%: {100 * v:.1f}%" for s, v in cost.items() if v is not None)
        lines.append(f"NDSNN's training FLOPs as a fraction of LTH's: {shares}.")
    dense = found.get("vs_dense_at_lowest_sparsity", {})
    if dense:
        lines.append(f"Accuracy minus dense at {100 * dense['sparsity']:g}% sparsity (points): {_signed(dense)}.")
    budget = ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("methods", "sparsities", "extra"))
    lines += ["", f"Settings: {budget}."]
    return "\n".join(lines) + "\n"


def _signed(differences: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:+.2f}" for k, v in differences.items() if k != "sparsity" and v is not None)
