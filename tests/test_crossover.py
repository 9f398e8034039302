"""The dispatcher's crossover table: lookup of the nearest measured layer, overrides, bad files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ndsnn import _extension
from ndsnn.ops import crossover, sparse_conv2d

CPU = torch.device("cpu")


def _record(c_in, c_out, size, spike_input, max_density, kernel=3, stride=1, batch=8):
    return dict(in_channels=c_in, out_channels=c_out, kernel=kernel, stride=stride, size=size, batch=batch,
                spike_input=spike_input, max_density=max_density)  # fmt: skip


@pytest.fixture
def table(tmp_path, monkeypatch):
    """Write a crossover table and point the dispatcher at it."""

    def write(records, device="cpu"):
        path = tmp_path / "crossover.json"
        path.write_text(json.dumps({"format": crossover.TABLE_FORMAT, "devices": {device: records}}))
        monkeypatch.setenv("NDSNN_CROSSOVER_FILE", str(path))
        monkeypatch.delenv("NDSNN_SPARSE_CONV_MAX_DENSITY", raising=False)
        crossover.clear_cache()
        return path

    yield write
    crossover.clear_cache()


def test_nearest_measured_layer_decides(table):
    table([_record(64, 64, 32, True, 0.02), _record(512, 512, 4, True, 0.2), _record(64, 64, 32, False, 0.01)])
    lookup = crossover.max_sparse_density
    assert lookup(CPU, (8, 64, 32, 32), (64, 64, 3, 3), (1, 1), True) == 0.02
    assert lookup(CPU, (8, 512, 2, 2), (512, 512, 3, 3), (1, 1), True) == 0.2
    assert lookup(CPU, (8, 48, 28, 28), (96, 48, 3, 3), (1, 1), True) == 0.02
    assert lookup(CPU, (8, 64, 32, 32), (64, 64, 3, 3), (1, 1), False) == 0.01
    assert lookup(torch.device("meta"), (8, 64, 32, 32), (64, 64, 3, 3), (1, 1), True) == 0.0  # unmeasured: dense


def test_override_and_its_range(table, monkeypatch):
    table([_record(64, 64, 32, True, 0.02)])
    monkeypatch.setenv("NDSNN_SPARSE_CONV_MAX_DENSITY", "0.5")
    assert crossover.max_sparse_density(CPU, (8, 64, 32, 32), (64, 64, 3, 3), (1, 1), True) == 0.5
    monkeypatch.setenv("NDSNN_SPARSE_CONV_MAX_DENSITY", "1.5")
    with pytest.raises(ValueError, match=r"NDSNN_SPARSE_CONV_MAX_DENSITY must be a number in \[0, 1\]; got '1.5'"):
        crossover.max_sparse_density(CPU, (8, 64, 32, 32), (64, 64, 3, 3), (1, 1), True)


def test_missing_and_corrupt_tables(tmp_path, monkeypatch):
    monkeypatch.delenv("NDSNN_SPARSE_CONV_MAX_DENSITY", raising=False)
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("NDSNN_CROSSOVER_FILE", str(missing))
    crossover.clear_cache()
    with pytest.raises(ValueError, match=r"NDSNN_CROSSOVER_FILE: crossover table .*nope.json not found"):
        crossover.max_sparse_density(CPU, (1, 1, 4, 4), (1, 1, 3, 3), (1, 1), True)
    bad_tables = (
        "{not json",
        json.dumps({"format": 99, "devices": {}}),
        json.dumps({"format": 1, "devices": {"cpu": [{"x": 1}]}}),
    )
    for text in bad_tables:
        missing.write_text(text)
        crossover.clear_cache()
        with pytest.raises(ValueError, match="is not a valid table"):
            crossover.max_sparse_density(CPU, (1, 1, 4, 4), (1, 1, 3, 3), (1, 1), True)
    crossover.clear_cache()


def test_shipped_table_is_valid():
    tables = crossover.load_table(crossover.TABLE_FILE)
    for records in tables.values():
        assert records, "a device kind listed in the shipped table must have records"
        for record in records:
            assert 0.0 <= record.max_density <= 1.0
            assert record.kernel >= 1 and record.stride >= 1 and record.batch >= 1


def test_auto_tells_spikes_from_real_inputs(table, monkeypatch):
    """Between the two crossovers, auto looks at x: spikes take the sparse kernel, real inputs stay dense."""
    if not _extension.has_kernel("sparse_conv2d_forward", "cpu"):
        pytest.skip("no compiled cpu kernel")
    table([_record(8, 8, 10, True, 0.3, batch=4), _record(8, 8, 10, False, 0.05, batch=4)])
    calls = []
    original = torch.ops.ndsnn.sparse_conv2d_forward
    monkeypatch.setattr(torch.ops.ndsnn, "sparse_conv2d_forward", lambda *a: calls.append(1) or original(*a))
    weight = torch.randn(8, 8, 3, 3)
    mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) >= 0.85
    spikes = (torch.rand(4, 8, 10, 10) < 0.1).float()
    real = torch.randn(4, 8, 10, 10)
    for x, spike_input, sparse_expected in (
        (spikes, None, True),
        (real, None, False),
        (real, True, True),
        (spikes, False, False),
    ):
        calls.clear()
        out = sparse_conv2d(x, weight, mask, None, 1, 1, spike_input=spike_input)
        assert bool(calls) == sparse_expected
        torch.testing.assert_close(out, F.conv2d(x, weight * mask, None, 1, 1), rtol=1e-5, atol=1e-5)
