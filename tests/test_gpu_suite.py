"""benchmarks/gpu_suite.py's bookkeeping, checked on a CPU: test outcomes per kernel family from pytest's
junit XML, the verification records a run earns, merging them into the table, and its refusal to run
without a GPU (the GPU stages themselves run on a GPU machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_suite  # noqa: E402

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
  <testcase classname="tests.test_lif_kernels" name="test_a[cuda]"/>
  <testcase classname="tests.test_lif_kernels" name="test_b[cuda]"><skipped message="x"/></testcase>
  <testcase classname="tests.test_batch_norm_lif" name="test_c[cuda]"><failure message="boom"/></testcase>
  <testcase classname="tests.test_batch_norm_lif" name="test_d[cuda]"/>
  <testcase classname="tests.test_sparse_linear" name="test_e[cuda]"/>
  <testcase classname="tests.test_sparse_conv2d" name="test_f[cuda]"><error message="setup"/></testcase>
  <testcase classname="tests.test_models" name="test_g[cuda]"/>
</testsuite></testsuites>
"""
ENV = {"arch": "sm_90", "gpu": "NVIDIA H200", "commit": "abc1234", "driver": "580.1", "cuda": "13.0",
       "torch": "2.11.0+cu130"}  # fmt: skip


def test_outcomes_per_kernel_family(tmp_path):
    (tmp_path / "j.xml").write_text(JUNIT)
    families = gpu_suite.family_results(tmp_path / "j.xml")
    assert (families["lif"].passed, families["lif"].skipped, families["lif"].failed) == (1, 1, 0)
    assert families["lif"].verified and families["lif_fast"].verified
    assert (families["batch_norm_lif"].passed, families["batch_norm_lif"].failed) == (1, 1)
    assert not families["batch_norm_lif"].verified
    assert families["batch_norm_lif"].failures == ["test_batch_norm_lif::test_c[cuda]"]
    assert not families["sparse_conv2d"].verified  # an error counts as a failure


def test_records_only_for_families_that_passed(tmp_path):
    (tmp_path / "j.xml").write_text(JUNIT)
    families = gpu_suite.family_results(tmp_path / "j.xml")
    hashes = {"lif": "1" * 16, "lif_fast": None, "batch_norm_lif": "2" * 16, "sparse_conv2d": "3" * 16}
    records = gpu_suite.verification_records(families, ENV, hashes)
    assert [r["kernel"] for r in records] == ["lif"]  # lif_fast passed but its sources are unknown here
    assert records[0]["arch"] == "sm_90" and records[0]["source"] == "1" * 16 and "1 CUDA tests passed" in (
        records[0]["evidence"])  # fmt: skip


def test_merging_replaces_a_record_of_the_same_sources(tmp_path):
    table = tmp_path / "verified.json"
    old = {"kernel": "lif", "arch": "sm_90", "source": "1" * 16, "gpu": "NVIDIA H100"}
    other = {"kernel": "lif", "arch": "sm_80", "source": "1" * 16, "gpu": "NVIDIA A100"}
    table.write_text(json.dumps({"format": 1, "records": [old, other]}))
    new = {"kernel": "lif", "arch": "sm_90", "source": "1" * 16, "gpu": "NVIDIA H200"}
    merged = gpu_suite.merge_records(table, [new])
    assert merged["records"] == [other, new]


def test_headlines_read_the_benchmark_files(tmp_path):
    lif = {"results": [{"impl": "ndsnn", "fraction_of_copy_bandwidth": 0.81, "speedup_of_ndsnn": 1.0},
                       {"impl": "ndsnn", "fraction_of_copy_bandwidth": 0.9, "speedup_of_ndsnn": 1.0}]}  # fmt: skip
    (tmp_path / "lif.json").write_text(json.dumps(lif))
    line = gpu_suite.headline("lif", tmp_path / "lif.json")
    assert "81%-90% of copy bandwidth" in line and "SpikingJelly skipped" in line
    assert gpu_suite.headline("lif", tmp_path / "missing.json") == "no result file"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_the_suite_refuses_to_run_without_a_gpu(tmp_path):
    result = subprocess.run([sys.executable, str(Path(gpu_suite.__file__)), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and "no CUDA device is visible" in result.stderr
