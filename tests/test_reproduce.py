"""`ndsnn reproduce`: the grid, the table and claims against hand computations, and a whole (tiny) sweep on
generated Fashion-MNIST files that writes its files and resumes without retraining."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ndsnn.cli import main
from ndsnn.data.testing import write_fake_fashion_mnist
from ndsnn.reproduce import BUDGETS, claims, grid, markdown, run_sweep, table_rows
from ndsnn.reproduce.report import write_report


def _summary(method: str, sparsity: float, seed: int, accuracy: float, flops: float) -> dict:
    return {"run": {"method": method, "sparsity": sparsity, "seed": seed}, "test_accuracy": accuracy,
            "sparsity": sparsity, "training_cost": {"flops": flops, "flops_relative_to_dense": flops / 100.0,
                                                    "method_decision_ops": 1.0},
            "spike_rates": {"a": 0.1, "b": 0.3}, "wall_time_s": 2.0, "device": "cpu"}  # fmt: skip


def test_grid_has_dense_once_per_seed():
    budget = BUDGETS["cpu"]
    runs = grid(budget)
    assert len(runs) == len(budget.seeds) * (1 + (len(budget.methods) - 1) * len(budget.sparsities))
    assert sum(r.method == "dense" for r in runs) == len(budget.seeds) >= 2
    assert len({r.name for r in runs}) == len(runs)


def test_table_and_claims_match_hand_computation():
    summaries = [
        _summary("dense", 0.0, 0, 0.90, 100.0), _summary("dense", 0.0, 1, 0.92, 100.0),
        _summary("ndsnn", 0.9, 0, 0.88, 10.0), _summary("ndsnn", 0.9, 1, 0.86, 14.0),
        _summary("lth", 0.9, 0, 0.87, 40.0), _summary("lth", 0.9, 1, 0.89, 40.0),
        _summary("set", 0.9, 0, 0.80, 8.0), _summary("set", 0.9, 1, 0.82, 8.0),
    ]  # fmt: skip
    rows = table_rows(summaries)
    assert [(r["method"], r["target_sparsity"]) for r in rows] == [("dense", 0.0), ("set", 0.9), ("lth", 0.9),
                                                                   ("ndsnn", 0.9)]  # fmt: skip
    ndsnn = rows[-1]
    assert ndsnn["accuracy_mean"] == pytest.approx(0.87) and ndsnn["accuracy_std"] == pytest.approx(0.0141421356)
    assert ndsnn["flops_relative_to_lth"] == pytest.approx(12.0 / 40.0)
    assert ndsnn["spike_rate"] == pytest.approx(0.2)
    found = claims(rows)
    assert found["ndsnn_vs_at_highest_sparsity"] == {"sparsity": 0.9, "set": pytest.approx(6.0),
                                                     "rigl": None, "lth": pytest.approx(-1.0)}  # fmt: skip
    assert found["ndsnn_cost_fraction_of_lth"] == {0.9: pytest.approx(0.3)}
    assert found["vs_dense_at_lowest_sparsity"]["ndsnn"] == pytest.approx(87.0 - 91.0)
    text = markdown(rows, found, {"epochs": 3})
    assert "| ndsnn | 90% | 87.00 ± 1.41 (2) | 90.00% | 12.0% | 30.0% | 0.200 | 2 |" in text
    assert "NDSNN's training FLOPs as a fraction of LTH's: 90%: 30.0%." in text and "Settings: epochs=3." in text


def test_tiny_sweep_end_to_end_and_resume(tmp_path, capsys):
    data = write_fake_fashion_mnist(tmp_path / "data", 64, 32)
    budget = dataclasses.replace(BUDGETS["cpu"], methods=("dense", "ndsnn", "lth"), sparsities=(0.5, 0.75),
                                 seeds=(0, 1), epochs=1, timesteps=1, train_samples=64,
                                 test_samples=None)  # fmt: skip
    logged: list[str] = []
    summaries = run_sweep(budget, tmp_path / "sweep", str(data), in_process=True, log=logged.append)
    assert len(logged) == len(summaries) == 2 * (1 + 2 * 2)
    lth = [s for s in summaries if s["run"]["method"] == "lth" and s["run"]["sparsity"] == 0.75]
    assert all(s["rounds"] == 3 for s in lth)  # prune rate 0.5: densities 1, 0.5, 0.25
    results = write_report(summaries, budget.to_dict(), tmp_path / "sweep")
    assert (tmp_path / "sweep" / "results.md").read_text().count("| ndsnn |") == 2
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert saved["settings"]["lth_prune_rate"] == 0.5 and len(saved["runs"]) == 10
    for plot in results["plots"]:
        assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # a second call retrains nothing; a run with a checkpoint but no summary resumes from it
    (tmp_path / "sweep" / "runs" / "ndsnn-s0.5-seed1" / "summary.json").unlink()
    logged.clear()
    again = run_sweep(budget, tmp_path / "sweep", str(data), in_process=True, log=logged.append)
    assert logged == ["[7/10] ndsnn-s0.5-seed1 (resuming)"]
    assert [s["test_accuracy"] for s in again] == [s["test_accuracy"] for s in summaries]


def test_reproduce_command_errors(capsys):
    assert main(["reproduce", "fashion-mnist", "--sparsities", "1.5"]) == 2
    assert "--sparsities must be in [0, 1), got 1.5" in capsys.readouterr().err
