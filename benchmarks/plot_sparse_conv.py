"""Plot a bench_sparse_conv.py --suite result: forward+backward speedup over dense against sparsity, one panel
per layer, sparse kernel and dispatcher ("auto") for each input kind. Needs matplotlib (pip install matplotlib).

    python benchmarks/plot_sparse_conv.py benchmarks/results/sparse_conv_suite_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--output", type=Path, help="PNG path (default: beside the results, .png)")
    parser.add_argument("--precision", help="which precision to plot (default: the first measured)")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is needed for the plot: pip install matplotlib", file=sys.stderr)
        return 1

    payload = json.loads(args.results.read_text())
    precision = args.precision or payload["settings"]["precisions"][0]
    series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in payload["results"]:
        if row["precision"] != precision:
            continue
        for implementation, ratio in row["speedup"]["fwd_bwd"].items():
            series[row["layer"]][f"{implementation} ({row['input']})"].append((row["sparsity"] * 100, ratio))

    layers = list(series)
    columns = 4
    rows = math.ceil(len(layers) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    styles = {"sparse": "-", "auto": "--"}
    for ax, layer in zip(axes.flat, layers, strict=False):
        for label, points in sorted(series[layer].items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], styles[label.split()[0]], marker="o", ms=3,
                    label=label)  # fmt: skip
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlim(45, 100)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("sparsity (%)", fontsize=8)
        ax.set_ylabel("speedup vs dense (fwd+bwd)", fontsize=8)
    for ax in list(axes.flat)[len(layers) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    env = payload["environment"]
    fig.suptitle(
        f"ndsnn sparse conv vs dense, {precision}, batch {payload['settings']['batch']}, "
        f"{env.get('cpu_model') or env.get('device')}, torch {env.get('torch')}",
        fontsize=10,
    )
    fig.tight_layout()
    output = args.output or args.results.with_suffix(".png")
    fig.savefig(output, dpi=110)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
