"""Markdown tables of a bench_train_step.py result file, for the README: step times and memory per variant,
and the profile breakdown.

python benchmarks/summarize_train_step.py benchmarks/results/train_step_cuda.json
"""

from __future__ import annotations

import argparse
import json
import sys


def _key(row: dict) -> tuple:
    return row["model"], row["timesteps"], row["precision"]


def step_table(payload: dict) -> str:
    rows = [r for r in payload["results"] if "step_ms" in r]
    sparsities = sorted({r["sparsity"] for r in rows if r["variant"] == "ndsnn" and r["sparsity"] > 0})
    header = ("| model | T | precision | dense ms | dense + SpikingJelly ms | ndsnn dense ms | "
              + " | ".join(f"ndsnn {100 * s:g}% ms (x dense, memory)" for s in sparsities)
              + f" | masked dense {100 * sparsities[-1]:g}% ms (x dense) |")  # fmt: skip
    unfused = any(r["variant"] == "ndsnn-unfused" for r in rows)
    if unfused:
        header += f" ndsnn {100 * sparsities[-1]:g}%, BN and LIF unfused ms (fused gain) |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for group in dict.fromkeys(_key(r) for r in rows):
        by = {(r["variant"], r["sparsity"]): r for r in rows if _key(r) == group}
        dense, sj, base = by[("dense", 0.0)], by[("dense-sj", 0.0)], by[("ndsnn", 0.0)]
        cells = [f"{by[('ndsnn', s)]['amortised_step_ms']:.1f} ({by[('ndsnn', s)]['speedup_vs_dense']:.2f}x, "
                 f"{by[('ndsnn', s)]['memory_vs_dense']:.2f}x)" for s in sparsities]  # fmt: skip
        masked = by[("masked-dense", sparsities[-1])]
        lines.append(f"| {group[0]} | {group[1]} | {group[2]} | {dense['step_ms']:.1f} | {sj['step_ms']:.1f} | "
                     f"{base['step_ms']:.1f} | " + " | ".join(cells)
                     + f" | {masked['amortised_step_ms']:.1f} ({masked['speedup_vs_dense']:.2f}x) |")  # fmt: skip
        if unfused:
            row = by.get(("ndsnn-unfused", sparsities[-1]))
            fused = by[("ndsnn", sparsities[-1])]
            gain = row["amortised_step_ms"] / fused["amortised_step_ms"] if row else 0.0
            lines[-1] += f" {row['amortised_step_ms']:.1f} ({gain:.2f}x) |" if row else " - |"
    return "\n".join(lines)


def profile_table(payload: dict) -> str:
    rows = [r for r in payload["results"] if "profile_ms" in r]
    if not rows:
        return ""
    categories = list(dict.fromkeys(c for r in rows for c in r["profile_ms"]))
    header = "| model | T | precision | step | " + " | ".join(f"{c} ms" for c in categories) + " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        cells = " | ".join(f"{r['profile_ms'].get(c, 0.0):.2f}" for c in categories)
        lines.append(f"| {r['model']} | {r['timesteps']} | {r['precision']} | {r['variant']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    args = parser.parse_args(argv)
    with open(args.results) as handle:
        payload = json.load(handle)
    print(step_table(payload))
    print()
    print(profile_table(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
