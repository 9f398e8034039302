"""A CUDA kernel runs by default only on GPU architectures where its current sources passed their tests:
the source hash follows every file the kernel is compiled from, records match kernel, architecture and
hash, and an unverified kernel falls back with a warning (or runs when NDSNN_UNVERIFIED_KERNELS=1)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ndsnn import _extension, _verification

CUDA = torch.device("cuda", 0)  # only a name here: nothing runs on it


@pytest.fixture
def gate(monkeypatch):
    """The gate as users see it (the test session itself trusts unverified kernels)."""
    monkeypatch.delenv(_verification.ENV_VAR, raising=False)
    monkeypatch.setattr(_verification, "architecture", lambda device: "sm_90")
    return monkeypatch


def _records(monkeypatch, *records):
    monkeypatch.setattr(_verification, "records", lambda: tuple(records))


def test_sources_of_a_kernel_include_its_headers():
    names = {path.name for path in _verification.source_files("lif")}
    assert {"lif_cuda.cu", "lif.h", "lif_math.h", "launch.h"} <= names
    assert "sparse_conv2d.h" in {path.name for path in _verification.source_files("sparse_conv2d")}


def test_the_hash_follows_every_source_file(tmp_path, monkeypatch):
    csrc = tmp_path / "csrc"
    shutil.copytree(_extension.sources_dir(), csrc)
    monkeypatch.setattr(_verification, "sources_dir", lambda: csrc)
    _verification.source_hash.cache_clear()
    try:
        before = {kernel: _verification.source_hash(kernel) for kernel in ("lif", "sparse_conv2d")}
        header = csrc / "lif_math.h"
        header.write_text(header.read_text() + "\n// changed\n")
        _verification.source_hash.cache_clear()
        assert _verification.source_hash("lif") != before["lif"]  # included, indirectly, by lif_cuda.cu
        assert _verification.source_hash("sparse_conv2d") == before["sparse_conv2d"]  # does not include it
    finally:
        _verification.source_hash.cache_clear()


def test_only_a_matching_record_allows_a_kernel(gate):
    digest = _verification.source_hash("lif")
    _records(gate)
    assert not _verification.allowed("lif_forward", CUDA)
    assert _verification.allowed("lif_forward", torch.device("cpu"))  # CPU kernels: tested on every change
    _records(gate, {"kernel": "lif", "arch": "sm_80", "source": digest})
    assert not _verification.allowed("lif_forward", CUDA)  # another architecture
    _records(gate, {"kernel": "lif", "arch": "sm_90", "source": "0" * 16})
    assert not _verification.allowed("lif_backward", CUDA)  # other sources
    _records(gate, {"kernel": "lif", "arch": "sm_90", "source": digest})
    assert _verification.allowed("lif_forward", CUDA) and _verification.allowed("lif_backward", CUDA)
    assert not _verification.allowed("batch_norm_lif_forward", CUDA)
    gate.setenv(_verification.ENV_VAR, "1")
    assert _verification.allowed("batch_norm_lif_forward", CUDA)


def test_an_unverified_kernel_is_not_used_and_says_so(gate):
    _records(gate)
    gate.setattr(_extension, "has_kernel", lambda op, device_type: True)
    gate.setattr(_extension, "_warned_fallbacks", set())
    with pytest.warns(RuntimeWarning, match="has not passed its tests on sm_90"):
        assert not _extension.use_kernel("batch_norm_lif_forward", CUDA)
    assert "NDSNN_UNVERIFIED_KERNELS=1" in _extension.kernel_unavailable("batch_norm_lif_forward", CUDA)


def test_the_shipped_table_is_well_formed():
    payload = json.loads(_verification.TABLE.read_text())
    assert payload["format"] == _verification.TABLE_FORMAT
    for record in payload["records"]:
        assert record["kernel"] in _verification.KERNEL_FILES
        assert record["arch"].startswith("sm_") and len(record["source"]) == 16
        assert record["gpu"] and record["evidence"]
