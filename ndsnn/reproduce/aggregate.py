"""Turns a sweep's run summaries into one table (mean and spread over seeds per row: a method, a method at
another's cost, or a peer framework's dense run; per target sparsity) and the comparisons the papers claim:
NDSNN's accuracy at the highest sparsity against SET, RigL and LTH, the same comparisons at equal training cost,
NDSNN's training cost as a fraction of LTH's, every method against the dense network at the lowest sparsity,
and the dense network trained by ndsnn against the same network trained by SpikingJelly."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from .budgets import sweep_methods


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _label(summary: dict[str, Any]) -> str:
    return summary["run"].get("label") or summary["run"]["method"]  # sweeps written before labels existed


def table_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (label, target sparsity), over its seeds."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for summary in summaries:
        groups[(_label(summary), summary["run"]["sparsity"])].append(summary)
    lth_flops = {s: _mean([r["training_cost"]["flops"] for r in runs]) for (m, s), runs in groups.items() if m == "lth"}
    rows = []
    for (label, sparsity), runs in groups.items():
        accuracy = [r["test_accuracy"] for r in runs]
        flops = _mean([r["training_cost"]["flops"] for r in runs])
        first = runs[0]["run"]
        rows.append({
            "method": label, "base_method": first["method"], "cost_of": first.get("cost_of"),
            "framework": first.get("framework", "ndsnn"), "target_sparsity": sparsity,
            "seeds": sorted(r["run"]["seed"] for r in runs),
            "accuracy_mean": _mean(accuracy), "accuracy_std": _std(accuracy),
            "accuracy_min": min(accuracy), "accuracy_max": max(accuracy),
            "accuracy_by_seed": {str(r["run"]["seed"]): r["test_accuracy"] for r in runs},
            "sparsity": _mean([r["sparsity"] for r in runs]),
            "epochs": _mean([float(r.get("config", {}).get("epochs", float("nan"))) for r in runs]),
            "rounds": _mean([float(r.get("rounds", 1)) for r in runs]),
            "flops": flops,
            "flops_relative_to_dense": _mean([r["training_cost"]["flops_relative_to_dense"] for r in runs]),
            "flops_relative_to_lth": flops / lth_flops[sparsity] if sparsity in lth_flops else None,
            "decision_ops": _mean([r["training_cost"].get("method_decision_ops", 0.0) for r in runs]),
            "spike_rate": _mean([_mean(list(r["spike_rates"].values())) for r in runs]),
            "wall_time_s": _mean([r["wall_time_s"] for r in runs]),
        })  # fmt: skip
    dense_run = next((r["flops"] for r in rows if r["method"] == "dense"), None)
    for row in rows:  # the whole run's FLOPs against the dense run's (LTH's rounds and equal-cost lengths count)
        row["flops_relative_to_dense_run"] = row["flops"] / dense_run if dense_run else row["flops_relative_to_dense"]
    order = {m: i for i, m in enumerate(sweep_methods())}
    return sorted(rows, key=lambda r: (r["target_sparsity"], order.get(r["base_method"], 99), r["framework"] != "ndsnn",
                                       r["cost_of"] is not None, r["method"]))  # fmt: skip


def claims(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The papers' claims, measured: differences in accuracy points and cost ratios (None when not run)."""
    cell = {(r["method"], r["target_sparsity"]): r for r in rows}
    sparsities = sorted({r["target_sparsity"] for r in rows if r["base_method"] != "dense"})
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
        dense = cell.get(("dense", 0.0))
        result["vs_dense_at_lowest_sparsity"] = {
            "sparsity": low,
            **{r["method"]: (100 * (r["accuracy_mean"] - dense["accuracy_mean"]) if dense else None)
               for r in rows if r["target_sparsity"] == low},
        }  # fmt: skip
    result["equal_cost"] = equal_cost_claims(rows)
    fidelity = dense_fidelity(rows)
    if fidelity:
        result["dense_fidelity"] = fidelity
    return result


def equal_cost_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each row trained at another method's cost: that method's accuracy minus this row's (points), and
    the cost actually reached (this row's FLOPs over the reference's)."""
    cell = {(r["method"], r["target_sparsity"]): r for r in rows}
    found = []
    for row in rows:
        reference = cell.get((row["cost_of"], row["target_sparsity"])) if row["cost_of"] else None
        if reference is None:
            continue
        found.append({
            "sparsity": row["target_sparsity"], "reference": reference["method"], "row": row["method"],
            "reference_accuracy": reference["accuracy_mean"], "row_accuracy": row["accuracy_mean"],
            "reference_minus_row_points": 100 * (reference["accuracy_mean"] - row["accuracy_mean"]),
            "cost_ratio": row["flops"] / reference["flops"] if reference["flops"] else None,
            "row_epochs": row["epochs"], "row_rounds": row["rounds"],
        })  # fmt: skip
    return found


def dense_fidelity(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """ndsnn's dense network against each peer framework's: accuracy difference (points, mean and per seed)
    beside the spread over seeds of each."""
    ours = next((r for r in rows if r["method"] == "dense"), None)
    peers = [r for r in rows if r["base_method"] == "dense" and r["framework"] != "ndsnn"]
    if ours is None or not peers:
        return None
    result = {}
    for peer in peers:
        seeds = sorted(set(ours["accuracy_by_seed"]) & set(peer["accuracy_by_seed"]))
        paired = [100 * (ours["accuracy_by_seed"][s] - peer["accuracy_by_seed"][s]) for s in seeds]
        spread = 100 * max(ours["accuracy_std"], peer["accuracy_std"])
        difference = 100 * (ours["accuracy_mean"] - peer["accuracy_mean"])
        judged = min(len(ours["seeds"]), len(peer["seeds"])) > 1  # one seed has no spread to judge by
        result[peer["framework"]] = {
            "ndsnn_accuracy": ours["accuracy_mean"], "peer_accuracy": peer["accuracy_mean"],
            "difference_points": difference, "difference_by_seed_points": dict(zip(seeds, paired, strict=True)),
            "largest_seed_spread_points": spread,
            "within_twice_the_spread": abs(difference) <= 2 * spread if judged else None,
            "ndsnn_wall_s": ours["wall_time_s"], "peer_wall_s": peer["wall_time_s"],
        }  # fmt: skip
    return result


def markdown(rows: list[dict[str, Any]], found: dict[str, Any], settings: dict[str, Any]) -> str:
    """The table and the claims as Markdown (what the README shows)."""
    lines = [
        "| method | target sparsity | test accuracy, mean ± std (seeds) | final sparsity | epochs | training FLOPs of "
        "the dense run's | of LTH's | spike rate | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lth = f"{100 * r['flops_relative_to_lth']:.1f}%" if r["flops_relative_to_lth"] is not None else "-"
        lines.append(
            f"| {r['method']} | {100 * r['target_sparsity']:g}% | {100 * r['accuracy_mean']:.2f} ± "
            f"{100 * r['accuracy_std']:.2f} ({len(r['seeds'])}) | {100 * r['sparsity']:.2f}% | {r['epochs']:.3g} | "
            f"{100 * r['flops_relative_to_dense_run']:.1f}% | {lth} | {r['spike_rate']:.3f} | {r['wall_time_s']:.0f} |"
        )
    top = found.get("ndsnn_vs_at_highest_sparsity", {})
    if top:
        lines += ["", f"At {100 * top['sparsity']:g}% sparsity NDSNN's accuracy minus the others' (points): "
                  f"{_signed(top)}."]  # fmt: skip
    for claim in found.get("equal_cost", []):
        lines.append(
            f"At {100 * claim['sparsity']:g}% sparsity and equal training cost, {claim['reference']} minus "
            f"{claim['row']} ({claim['row_epochs']:.3g} epochs{' per round' if claim['row_rounds'] > 1 else ''}"
            f", {100 * claim['cost_ratio']:.0f}% of {claim['reference']}'s FLOPs): "
            f"{claim['reference_minus_row_points']:+.2f} points."
        )
    shares = ", ".join(f"{100 * s:g}%: {100 * v:.1f}%" for s, v in found.get("ndsnn_cost_fraction_of_lth", {}).items()
                       if v is not None)  # fmt: skip
    if shares:
        lines.append(f"NDSNN's training FLOPs as a fraction of LTH's: {shares}.")
    dense = found.get("vs_dense_at_lowest_sparsity", {})
    if dense:
        lines.append(f"Accuracy minus dense at {100 * dense['sparsity']:g}% sparsity (points): {_signed(dense)}.")
    for framework, check in found.get("dense_fidelity", {}).items():
        per_seed = ", ".join(f"seed {s}: {v:+.2f}" for s, v in check["difference_by_seed_points"].items())
        if check["within_twice_the_spread"] is None:
            verdict = "one seed so far: no spread over seeds to judge it by"
        else:
            verdict = (f"{'within' if check['within_twice_the_spread'] else 'outside'} twice the larger spread over "
                       f"seeds ({check['largest_seed_spread_points']:.2f} points)")  # fmt: skip
        difference = check["difference_points"]
        lines.append(f"Dense, ndsnn minus {framework}: {difference:+.2f} points ({per_seed}), {verdict}.")
    hidden = ("methods", "sparsities", "extra", "equal_cost", "peers", "unfinished_runs")
    shown = {k: v for k, v in settings.items() if k not in hidden}
    budget = ", ".join(f"{k}={v}" for k, v in {**shown, **settings.get("extra", {})}.items())
    lines += ["", f"Settings: {budget}."]
    if settings.get("unfinished_runs"):
        lines.append(f"Not finished yet, so not in the table: {', '.join(settings['unfinished_runs'])}.")
    return "\n".join(lines) + "\n"


def _signed(differences: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:+.2f}" for k, v in differences.items() if k != "sparsity" and v is not None)
