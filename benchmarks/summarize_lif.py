"""Markdown table of a bench_lif.py result file, for the README.

python benchmarks/summarize_lif.py benchmarks/results/lif_cpu.json [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


def table(payload: dict, steps: int | None) -> str:
    rows = [r for r in payload["results"] if steps is None or r["T"] == steps]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    grouped: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        grouped[(r["layer"], r["T"], r["dtype"])][r["impl"]] = r
    header = "| layer (N={}) | T | dtype | ".format(rows[0]["N"]) + " | ".join(f"{i} ms" for i in impls)
    header += " | ndsnn vs spikingjelly | saved B/neuron-step (ndsnn / spikingjelly) |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for (layer, t, dtype), by_impl in grouped.items():
        times = " | ".join(f"{by_impl[i]['fwd_bwd_ms']:.2f}" if i in by_impl else "-" for i in impls)
        sj = by_impl.get("spikingjelly")
        ratio = f"{sj['speedup_of_ndsnn']:.2f}x" if sj else "-"
        saved = f"{by_impl['ndsnn']['saved_bytes_per_neuron_step']:.0f} / " + (
            f"{sj['saved_bytes_per_neuron_step']:.0f}" if sj else "-"
        )
        lines.append(f"| {layer} | {t} | {dtype} | {times} | {ratio} | {saved} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--steps", type=int, default=None, help="only this T")
    args = parser.parse_args(argv)
    with open(args.results) as handle:
        payload = json.load(handle)
    env = payload["environment"]
    print(f"{env.get('cpu_model') or env['device']}, {env['cpu_threads']} threads, torch {env['torch']}, "
          f"spikingjelly {env.get('spikingjelly')}, ndsnn {env['ndsnn']} ({env['commit']})\n")  # fmt: skip
    print(table(payload, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
