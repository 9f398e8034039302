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


def per_sparsity(payload: dict) -> str:
    """One row per sparsity of a single-layer run: times and speedups, forward / backward / both."""
    names = [n for n in payload["settings"].get("implementations", ["dense", "sparse", "auto"]) if n != "dense"]
    header = "| sparsity | dense fwd+bwd ms | " + " | ".join(f"{n} fwd+bwd ms" for n in names)
    header += " | " + " | ".join(f"{n} speedup fwd / bwd / fwd+bwd" for n in names) + " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in payload["results"]:
        ms, speedup = row["ms"]["fwd_bwd"], row["speedup"]
        times = " | ".join(f"{ms[n]:.2f}" if n in ms else "-" for n in names)
        ratios = " | ".join(
            " / ".join(f"{speedup[phase][n]:.2f}x" for phase in ("fwd", "bwd", "fwd_bwd")) if n in ms else "-"
            for n in names
        )
        lines.append(f"| {row['sparsity']:.1%} | {ms['dense']:.2f} | {times} | {ratios} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results")
    parser.add_argument("--implementation", default="sparse", choices=["sparse", "auto"])
    parser.add_argument("--per-sparsity", action="store_true", help="a single-layer run, one row per sparsity")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        payload = json.load(f)
    print(per_sparsity(payload) if args.per_sparsity else table(payload, args.implementation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
