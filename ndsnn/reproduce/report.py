"""Writes a sweep's results: results.json (settings, environment, every run's summary, the table, the claims),
results.md (the table and claims, what the README shows) and the plots."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..train.json_safe import dumps
from .aggregate import claims, markdown, table_rows
from .plots import plot_sweep


def write_report(summaries: list[dict[str, Any]], settings: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    out_dir = Path(out_dir)
    rows = table_rows(summaries)
    found = claims(rows)
    devices = sorted({s.get("device", "?") for s in summaries})
    environment = {"ndsnn": __version__, "torch": torch.__version__, "python": platform.python_version(),
                   "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                   "devices": devices,
                   "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip
    results = {"settings": settings, "environment": environment, "table": rows, "claims": found,
               "runs": summaries}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(rows, found, settings))
    results["plots"] = [str(p) for p in plot_sweep(rows, out_dir)]
    return results
