"""The GPU path checked in one run on a fresh GPU machine: build, CUDA tests, a memory checker, short
benchmarks, and one summary. Sized to finish in about 8 minutes on one H100 / H200.

    python benchmarks/gpu_suite.py --out DIR [--budget-s 480] [--write-verified] [--skip STAGE ...]
    NDSNN_COMMIT=<commit> python benchmarks/gpu_suite.py --out DIR   # a tree copied without its git history

Stages, each with its own time limit inside --budget-s:
  build      the extension for the visible GPU only (TORCH_CUDA_ARCH_LIST from its compute capability),
             ninja with one job per CPU (`setup.py build_ext --inplace`); then the kernels must load
  tests      `pytest -m cuda` over tests/ (pytest-xdist when installed) with NDSNN_UNVERIFIED_KERNELS=1, so
             that kernels without a verification record are tested too; results per kernel family
  sanitizer  compute-sanitizer memcheck over one small call of every CUDA kernel (when the tool is there)
  lif, bn-lif, sparse-conv, topk, train-step
             short versions of the benchmarks (their JSON files land in DIR)

Writes DIR/suite.json (environment, commit, every stage's outcome and time, tests per kernel family, the
verification records this run earned, the benchmarks' headline figures) and prints one summary table.
--write-verified adds those records to ndsnn/verified_kernels.json, after which the kernels run by default
on this GPU architecture. Peers missing on the machine (SpikingJelly) show as skipped rows, not failures:
bring them as wheels (README, "Running the GPU suite").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
# Which test modules check which CUDA kernel family (ndsnn/_verification.KERNEL_FILES).
FAMILY_TESTS = {
    "lif": ("test_lif_kernels", "test_lif_module", "test_lif_errors"),
    "lif_fast": ("test_lif_kernels",),
    "batch_norm_lif": ("test_batch_norm_lif",),
    "sparse_conv2d": ("test_sparse_conv2d", "test_sparse_linear"),
    "sparse_conv2d_tiled": ("test_sparse_conv2d_tiled",),
}
STAGES = ("build", "tests", "sanitizer", "lif", "bn-lif", "sparse-conv", "topk", "train-step")


@dataclass
class Stage:
    name: str
    status: str = "not run"  # ok, failed, timed out, skipped, not run
    seconds: float = 0.0
    detail: str = ""
    outputs: list[str] = field(default_factory=list)


@dataclass
class FamilyResult:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.passed > 0 and self.failed == 0


def family_results(junit_xml: Path) -> dict[str, FamilyResult]:
    """Per kernel family, the outcomes of its CUDA tests in a pytest junit XML report."""
    results = {family: FamilyResult() for family in FAMILY_TESTS}
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        for family, modules in FAMILY_TESTS.items():
            if module in modules:
                result = results[family]
                setattr(result, outcome, getattr(result, outcome) + 1)
                if outcome == "failed" and len(result.failures) < 10:
                    result.failures.append(f"{module}::{case.get('name')}")
    return results


def verification_records(families: dict[str, FamilyResult], env: dict, hashes: dict[str, str | None]) -> list[dict]:
    """A record for every family whose CUDA tests all passed in this run (and whose sources are known)."""
    records = []
    for family, result in families.items():
        if result.verified and hashes.get(family):
            records.append({
                "kernel": family, "arch": env["arch"], "gpu": env["gpu"], "source": hashes[family],
                "commit": env["commit"],
                "evidence": f"benchmarks/gpu_suite.py: {result.passed} CUDA tests passed, {result.skipped} skipped, "
                            f"0 failed; driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}",
            })  # fmt: skip
    return records


def merge_records(table: Path, new: list[dict]) -> dict:
    """The verification table with `new` records added (one per kernel, architecture and source)."""
    payload = json.loads(table.read_text()) if table.exists() else {"format": 1, "records": []}
    keys = {(r["kernel"], r["arch"], r["source"]) for r in new}
    kept = [r for r in payload["records"] if (r["kernel"], r["arch"], r["source"]) not in keys]
    payload["records"] = kept + new
    return payload


def run_stage(stage: Stage, command: list[str], timeout: float, log: Path, env: dict | None = None) -> bool:
    """Runs one stage's command with a time limit; its output goes to `log`. True if it exited 0."""
    started = time.monotonic()
    print(f"== {stage.name}: {' '.join(command)[:200]}", flush=True)
    with open(log, "w") as handle:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=max(1, timeout),
                                  env={**os.environ, **(env or {})}).returncode  # fmt: skip
            stage.status = "ok" if code == 0 else "failed"
            if code != 0:
                stage.detail = f"exit {code}; see {log.name}"
        except subprocess.TimeoutExpired:
            stage.status, stage.detail = "timed out", f"after {timeout:.0f} s; see {log.name}"
    stage.seconds = time.monotonic() - started
    stage.outputs.append(log.name)
    print(f"   {stage.status} in {stage.seconds:.0f} s {stage.detail}", flush=True)
    return stage.status == "ok"


def environment() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    driver = None
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True).stdout.strip().splitlines()[0:1]
    sys.path.insert(0, str(BENCHMARKS))
    from common import git_commit

    return {
        "gpu": props.name, "arch": f"sm_{props.major}{props.minor}", "capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1),
        "driver": driver[0] if driver else None, "cuda": torch.version.cuda, "torch": torch.__version__,
        "python": sys.version.split()[0], "cpus": os.cpu_count(), "commit": git_commit(),
        "nvcc": shutil.which("nvcc"), "compute_sanitizer": shutil.which("compute-sanitizer"),
    }  # fmt: skip


SANITIZED_CALLS = """
import torch, ndsnn
from ndsnn.ops.sparse_conv2d_tiled import sparse_conv2d_tiled
d = torch.device("cuda")
x = torch.randn(5, 3, 8, 6, 6, device=d, requires_grad=True)
ndsnn.ops.lif(x).sum().backward()                                   # lif_*_fast
ndsnn.ops.lif(x, tau=torch.full((8,), 2.0, device=d)).sum().backward()  # lif_* (per channel)
bn = (torch.zeros(8, device=d), torch.ones(8, device=d), torch.ones(8, device=d, requires_grad=True),
      torch.zeros(8, device=d, requires_grad=True))
ndsnn.ops.batch_norm_lif(x, *bn, training=True).sum().backward()
for stride in (1, 2):
    w = torch.randn(4, 3, 3, 3, device=d, requires_grad=True)
    m = torch.rand(w.shape, device=d) < 0.3
    xi = (torch.rand(2, 3, 9, 7, device=d) < 0.2).float().requires_grad_()
    ndsnn.ops.sparse_conv2d(xi, w, m, stride=stride, padding=1, implementation="sparse").sum().backward()
    for budget in (0, 2000):  # the tiled kernels, large and small tiles
        sparse_conv2d_tiled(xi, w, m, None, stride, 1, smem_budget=budget).sum().backward()
torch.cuda.synchronize()
print("sanitized calls done")
"""


def benchmark_commands(out: Path) -> dict[str, list[str]]:
    """The short benchmark runs, each writing its JSON into `out`."""
    py = sys.executable
    return {
        "lif": [py, "benchmarks/bench_lif.py", "--device", "cuda", "--steps", "4", "8", "--dtypes", "float32",
                "bfloat16", "--min-run-time", "0.2", "--out", str(out / "lif_cuda.json")],
        "bn-lif": [py, "benchmarks/bench_bn_lif.py", "--device", "cuda", "--steps", "4", "--dtypes", "float32",
                   "bfloat16", "--min-run-time", "0.2", "--out", str(out / "bn_lif_cuda.json")],
        "sparse-conv": [py, "benchmarks/bench_sparse_conv.py", "--device", "cuda", "--suite", "--layers",
                        "vgg16/conv5", "vgg16/conv11-13", "resnet19/stage2", "resnet19/stage3", "--inputs", "spikes",
                        "--precisions", "fp32-tf32", "bf16", "--sparsities", "0.99", "0.95", "0.9", "--implementations",
                        "sparse", "auto", "tiled", "general",
                        "--min-run-time", "0.1", "--output", str(out / "sparse_conv_suite_cuda.json")],
        "topk": [py, "benchmarks/bench_topk.py", "--device", "cuda", "--min-run-time", "0.2", "--output",
                 str(out / "topk_cuda.json")],
        "train-step": [py, "benchmarks/bench_train_step.py", "--device", "cuda", "--models", "vgg16", "resnet19",
                       "--timesteps", "4", "--sparsities", "0.99", "--precisions", "fp32", "bf16",
                       "--min-run-time", "0.5", "--min-rounds", "3", "--output", str(out / "train_step_cuda.json")],
    }  # fmt: skip


def headline(name: str, path: Path) -> str:
    """One line of the benchmark's main figures, read from its JSON (or why there is none)."""
    if not path.exists():
        return "no result file"
    rows = json.loads(path.read_text()).get("results", [])
    if name == "lif":
        fractions = [r["fraction_of_copy_bandwidth"] for r in rows if "fraction_of_copy_bandwidth" in r
                     and r["impl"] == "ndsnn"]  # fmt: skip
        sj = [r["speedup_of_ndsnn"] for r in rows if r["impl"] == "spikingjelly"]
        sj_text = f"{min(sj):.2f}-{max(sj):.2f}x SpikingJelly" if sj else "SpikingJelly skipped (not installed)"
        return f"ndsnn at {min(fractions):.0%}-{max(fractions):.0%} of copy bandwidth; {sj_text}" if fractions else "-"
    if name == "bn-lif":
        fused = json.loads(path.read_text()).get("settings", {}).get("fused_kernel_ran")
        ratios = [r["fused_speedup"]["bn + ndsnn lif"] for r in rows if "bn + ndsnn lif" in r["fused_speedup"]]
        text = f"fused {min(ratios):.2f}-{max(ratios):.2f}x BN + LIF kernel" if ratios else "see file"
        return text + ("" if fused else " (the fused kernel did not run: both sides unfused)")
    if name == "sparse-conv":
        best = {}
        for r in rows:
            for kernels in ("tiled", "general"):
                ratio = r["speedup"]["fwd_bwd"].get(kernels)
                if ratio is not None:
                    key = f"{kernels} {r['precision']} {r['sparsity']:g}"
                    best[key] = max(best.get(key, 0.0), ratio)
        return "; ".join(f"{k}: best {v:.2f}x cuDNN" for k, v in sorted(best.items())) or "-"
    return f"{len(rows)} rows"


def summary_table(env: dict, stages: list[Stage], families: dict[str, FamilyResult], heads: dict[str, str]) -> str:
    title = (f"GPU suite: {env['gpu']} ({env['arch']}), driver {env['driver']}, CUDA {env['cuda']}, torch "
             f"{env['torch']}, commit {env['commit']}")  # fmt: skip
    lines = [title, "", "| stage | status | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.detail or heads.get(s.name, '')} |" for s in stages]
    if families:
        lines += ["", "| kernel | CUDA tests passed | failed | skipped | verified here |", "|---|---|---|---|---|"]
        for family, result in families.items():
            lines.append(f"| {family} | {result.passed} | {result.failed} | {result.skipped} | "
                         f"{'yes' if result.verified else 'NO'} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for suite.json, logs and benchmark results")
    parser.add_argument("--budget-s", type=float, default=480.0, help="whole-suite time limit (default 480)")
    parser.add_argument("--skip", nargs="*", default=[], choices=STAGES, help="stages to leave out")
    parser.add_argument("--write-verified", action="store_true",
                        help="add this run's verification records to ndsnn/verified_kernels.json")  # fmt: skip
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_suite: no CUDA device is visible; this suite checks the GPU path only", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = environment()
    stages = {name: Stage(name) for name in STAGES}
    left = lambda: args.budget_s - (time.monotonic() - started)  # noqa: E731
    for name in args.skip:
        stages[name].status = "skipped"

    build_env = {"TORCH_CUDA_ARCH_LIST": env["capability"], "MAX_JOBS": str(env["cpus"] or 8)}
    if stages["build"].status != "skipped":
        run_stage(stages["build"], [sys.executable, "setup.py", "build_ext", "--inplace"], min(240, left()),
                  out / "build.log", build_env)  # fmt: skip
    check = [sys.executable, "-c", "import ndsnn; s = ndsnn.kernel_status(); print(s); "
             "assert ('lif_forward', 'cuda') in s.kernels, 'no CUDA kernels loaded'"]  # fmt: skip
    loaded = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
    if loaded.returncode != 0:
        stages["build"].status = "failed"
        stages["build"].detail = "the CUDA kernels do not load: " + loaded.stderr.strip().splitlines()[-1][:200]

    families: dict[str, FamilyResult] = {}
    test_env = {"NDSNN_UNVERIFIED_KERNELS": "1", "PYTHONUNBUFFERED": "1"}
    if stages["tests"].status != "skipped":
        xdist = ["-n", "8"] if _has_module("xdist") else []
        junit = out / "cuda_tests.xml"
        run_stage(stages["tests"], [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                                    *xdist, f"--junitxml={junit}", "tests"], min(200, left()), out / "tests.log",
                  test_env)  # fmt: skip
        if junit.exists():
            families = family_results(junit)
            stages["tests"].outputs.append(junit.name)
            failed = sum(r.failed for r in families.values())
            stages["tests"].detail = (
                stages["tests"].detail or f"{sum(r.passed for r in families.values())} passed, {failed} failed"
            )

    if stages["sanitizer"].status != "skipped":
        if env["compute_sanitizer"] is None:
            stages["sanitizer"].status, stages["sanitizer"].detail = "skipped", "compute-sanitizer not found"
        else:
            for tool in ("memcheck", "racecheck"):  # bad accesses; shared-memory races of the tiled kernels
                command = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "3", sys.executable, "-c",
                           SANITIZED_CALLS]  # fmt: skip
                run_stage(stages["sanitizer"], command, min(75, left()), out / f"sanitizer_{tool}.log", test_env)
                if stages["sanitizer"].status != "ok":
                    break

    sys.path.insert(0, str(ROOT))
    from ndsnn import _verification

    hashes = {family: _verification.source_hash(family) for family in FAMILY_TESTS}
    records = verification_records(families, env, hashes)
    every_family_verified = bool(families) and all(r.verified for r in families.values())
    bench_env = {"NDSNN_UNVERIFIED_KERNELS": "1"} if every_family_verified else {}
    heads = {}
    for name, command in benchmark_commands(out).items():
        if stages[name].status == "skipped":
            continue
        if left() < 20:
            stages[name].status, stages[name].detail = "skipped", "out of the suite's time budget"
            continue
        run_stage(stages[name], command, min(150, left()), out / f"{name}.log", bench_env)
        result_file = Path(command[-1])
        if result_file.exists():
            stages[name].outputs.append(result_file.name)
            heads[name] = headline(name, result_file)

    if args.write_verified and records:
        payload = merge_records(_verification.TABLE, records)
        _verification.TABLE.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {len(records)} verification record(s) to {_verification.TABLE}")
    summary = {
        "benchmark": "gpu_suite", "environment": env, "budget_s": args.budget_s,
        "total_s": time.monotonic() - started, "stages": [asdict(s) for s in stages.values()],
        "tests": {family: {**asdict(result), "verified": result.verified} for family, result in families.items()},
        "verification_records": records, "source_hashes": hashes,
        "benchmarks_trusted_unverified_kernels": bool(bench_env), "headlines": heads,
    }  # fmt: skip
    (out / "suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(summary_table(env, list(stages.values()), families, heads))
    print(f"total {summary['total_s']:.0f} s; wrote {out / 'suite.json'}")
    ok = all(s.status in ("ok", "skipped") for s in stages.values()) and every_family_verified
    return 0 if ok else 1


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
