"""How exported NIR graphs agree with the trained models and with snnTorch's importer, for several trained
checkpoints: `python -m ndsnn.nir.measure` on each (whole test sets by default), collected in one file.

    python benchmarks/nir_agreement.py NAME=runs/.../checkpoint.pt [NAME=...] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--samples", type=int, default=None, help="first N test samples (default all)")
    parser.add_argument("--output", default="nir_agreement.json")
    args = parser.parse_args(argv)
    results = {}
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not path:
            parser.error(f"expected NAME=CHECKPOINT, got {item!r}")
        command = [sys.executable, "-m", "ndsnn.nir.measure", "--checkpoint", path]
        command += ["--samples", str(args.samples)] if args.samples else []
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{name}: measuring failed\n{result.stderr[-3000:]}")
        results[name] = json.loads(result.stdout)
        print(f"{name}: {json.dumps(results[name])[:300]}", flush=True)
    payload = {"benchmark": "nir_agreement", "environment": environment(torch.device("cpu")),
               "settings": {"samples": args.samples or "all"}, "results": results}  # fmt: skip
    print(f"wrote {write_results(args.output, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
