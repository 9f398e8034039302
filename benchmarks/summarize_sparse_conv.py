"""Markdown table of bench_sparse_conv.py results, for the README: per layer, the forward+backward speedup
over dense at a few sparsities and the crossover density, each as "spike input / real input".

python benchmarks/summarize_sparse_conv.py benchmarks/results/sparse_conv_crossover_cpu.json [--implementation sparse]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

SHOWN = (0.9, 0.95, 0.99, 0.995)


def table(payload: dict, implementation: str) -> str:
    """One row per layer; each cell "spikes / real"."""
    ratios: dict[str, dict[tuple[str, float], float]] = defaultdict(dict)
    for row in payload["results"]:
        ratio = row["speedup"]["fwd_bwd"].get(implementation)
        if ratio is not None:
            ratios[row["layer"]][(row["input"], row["sparsity"])] = ratio
    crossover = {
        (r["layer"], "spikes" if r["spike_input"] else "real"): r["max_density"] for r in payload.get("crossover", [])
    }

    def pair(values: dict, key) -> str:
        cells = [values.get(key(kind)) for kind in ("spikes", "real")]
        return " / ".join("-" if v is None else v for v in cells)

    header = "| layer | " + " | ".join(f"{s:.1%} sparse" for s in SHOWN) + " | crossover density |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for layer, by_key in ratios.items():
        shown = {k: f"{v:.2f}x" for k, v in by_key.items()}
        cells = " | ".join(pair(shown, lambda kind, s=s: (kind, s)) for s in SHOWN)
        cross = {k: f"{v:.0%}" for k, v in crossover.items() if k[0] == layer}
        lines.append(f"| {layer} | {cells} | {pair(cross, lambda kind, layer=layer: (layer, kind))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results")
    parser.add_argument("--implementation", default="sparse", choices=["sparse", "auto"])
    args = parser.parse_args(argv)
    with open(args.results) as f:
        print(table(json.load(f), args.implementation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
