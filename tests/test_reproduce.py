"""`ndsnn reproduce`: the grid, the table and claims against hand computations, and a whole (tiny) sweep on
generated Fashion-MNIST files that writes its files and resumes without retraining."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ndsnn.cli import main
from ndsnn.data.testing import write_fake_fashion_mnist
from ndsnn.reproduce import BUDGETS, RunSpec, claims, grid, markdown, run_sweep, table_rows
from ndsnn.reproduce.report import write_report
from ndsnn.reproduce.sweep import train_options


def _summary(method: str, sparsity: float, seed: int, accuracy: float, flops: float, cost_of: str | None = None,
             framework: str = "ndsnn", epochs: float = 3) -> dict:  # fmt: skip
    run = RunSpec(method, sparsity, seed, cost_of=cost_of, framework=framework)
    return {"run": run.to_dict(), "test_accuracy": accuracy, "config": {"epochs": epochs},
            "sparsity": sparsity, "training_cost": {"flops": flops, "flops_relative_to_dense": flops / 100.0,
                                                    "method_decision_ops": 1.0},
            "spike_rates": {"a": 0.1, "b": 0.3}, "wall_time_s": 2.0, "device": "cpu"}  # fmt: skip


def test_grid_has_dense_once_per_seed_and_references_before_equal_cost_runs():
    budget = BUDGETS["cpu"]
    runs = grid(budget)
    base = 1 + (len(budget.methods) - 1) * len(budget.sparsities)
    extra = len(budget.cost_pairs()) * len(budget.sparsities) + len(budget.peers)
    assert len(runs) == len(budget.seeds) * (base + extra)
    assert sum(r.method == "dense" and r.framework == "ndsnn" for r in runs) == len(budget.seeds) >= 2
    assert len({r.name for r in runs}) == len(runs)
    names = [r.name for r in runs]
    for index, run in enumerate(runs):
        if run.cost_of:
            assert {run.own_full_run().name, run.reference_run().name} <= set(names[:index])
    assert "lth-at-ndsnn-cost-s0.99-seed1" in names and "dense-spikingjelly-seed0" in names
    full = BUDGETS["full"]
    assert full.train_samples is None and full.timesteps == 4 and full.sparsities == (0.9, 0.99)
    assert {r.label for r in grid(full)} == {"dense", "set", "rigl", "lth", "ndsnn", "criticality",
                                             "lth @ ndsnn cost", "dense (spikingjelly)"}  # fmt: skip


def test_equal_cost_epochs_scale_a_run_to_its_reference_flops():
    done = {"lth-s0.9-seed0": _summary("lth", 0.9, 0, 0.9, 400.0), "ndsnn-s0.9-seed0": _summary("ndsnn", 0.9, 0, 0.9,
                                                                                                 20.0)}  # fmt: skip
    budget = BUDGETS["cpu"]
    lth_cheap = train_options(budget, RunSpec("lth", 0.9, 0, cost_of="ndsnn"), None, done)
    assert lth_cheap["epochs"] == pytest.approx(3 * 20 / 400) and lth_cheap["method_options"] == {"prune_rate": 0.5}
    assert train_options(budget, RunSpec("ndsnn", 0.9, 0, cost_of="lth"), None, done)["epochs"] == 60
    done["ndsnn-s0.9-seed0"]["update_interval"] = 7  # the longer run keeps its full run's update interval
    assert train_options(budget, RunSpec("ndsnn", 0.9, 0, cost_of="lth"), None, done)["update_interval"] == 7
    assert "update_interval" not in lth_cheap
    with pytest.raises(RuntimeError, match="lth-s0.9-seed1 and ndsnn-s0.9-seed1, which have not finished"):
        train_options(budget, RunSpec("lth", 0.9, 1, cost_of="ndsnn"), None, done)


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
    assert "| ndsnn | 90% | 87.00 ± 1.41 (2) | 90.00% | 3 | 12.0% | 30.0% | 0.200 | 2 |" in text
    assert "NDSNN's training FLOPs as a fraction of LTH's: 90%: 30.0%." in text and "Settings: epochs=3." in text
    rounds = _summary("lth", 0.5, 0, 0.9, 250.0)  # 5 rounds at half density a step: 2.5 dense runs' FLOPs
    rounds["training_cost"]["flops_relative_to_dense"] = 0.5
    row = next(r for r in table_rows([*summaries[:2], rounds]) if r["method"] == "lth")
    assert row["flops_relative_to_dense_run"] == pytest.approx(2.5)
    without_lth = table_rows([s for s in summaries if s["run"]["method"] != "lth"])  # no empty cost line
    assert "fraction of LTH's" not in markdown(without_lth, claims(without_lth), {"epochs": 3})


def test_tiny_sweep_end_to_end_and_resume(tmp_path, capsys):
    data = write_fake_fashion_mnist(tmp_path / "data", 64, 32)
    budget = dataclasses.replace(BUDGETS["cpu"], methods=("dense", "ndsnn", "lth"), sparsities=(0.5, 0.75),
                                 seeds=(0, 1), epochs=1, timesteps=1, train_samples=64, test_samples=None,
                                 equal_cost=(), peers=())  # fmt: skip
    logged: list[str] = []
    summaries = run_sweep(budget, tmp_path / "sweep", str(data), in_process=True, log=logged.append)
    assert len(logged) == len(summaries) == 2 * (1 + 2 * 2)
    lth = [s for s in summaries if s["run"]["method"] == "lth" and s["run"]["sparsity"] == 0.75]
    assert all(s["rounds"] == 3 for s in lth)  # prune rate 0.5: densities 1, 0.5, 0.25
    results = write_report(summaries, budget.to_dict(), tmp_path / "sweep")
    assert (tmp_path / "sweep" / "results.md").read_text().count("| ndsnn |") == 2
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert saved["settings"]["method_options"] == {"lth": {"prune_rate": 0.5}} and len(saved["runs"]) == 10
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


def test_equal_cost_rows_and_claims_match_hand_computation():
    summaries = [
        _summary("dense", 0.0, 0, 0.90, 100.0), _summary("dense", 0.0, 1, 0.92, 100.0),
        _summary("dense", 0.0, 0, 0.89, 100.0, framework="spikingjelly"),
        _summary("dense", 0.0, 1, 0.92, 100.0, framework="spikingjelly"),
        _summary("ndsnn", 0.9, 0, 0.88, 10.0), _summary("lth", 0.9, 0, 0.90, 200.0),
        _summary("lth", 0.9, 0, 0.70, 11.0, cost_of="ndsnn", epochs=0.15),
        _summary("ndsnn", 0.9, 0, 0.89, 190.0, cost_of="lth", epochs=60),
    ]  # fmt: skip
    rows = table_rows(summaries)
    assert [r["method"] for r in rows] == ["dense", "dense (spikingjelly)", "lth", "lth @ ndsnn cost", "ndsnn",
                                           "ndsnn @ lth cost"]  # fmt: skip
    found = claims(rows)
    equal = {c["row"]: c for c in found["equal_cost"]}
    assert equal["lth @ ndsnn cost"]["reference_minus_row_points"] == pytest.approx(18.0)
    assert equal["lth @ ndsnn cost"]["cost_ratio"] == pytest.approx(1.1)
    assert equal["ndsnn @ lth cost"]["reference_minus_row_points"] == pytest.approx(1.0)
    fidelity = found["dense_fidelity"]["spikingjelly"]
    assert fidelity["difference_points"] == pytest.approx(0.5)
    assert fidelity["difference_by_seed_points"] == {"0": pytest.approx(1.0), "1": pytest.approx(0.0)}
    assert fidelity["within_twice_the_spread"]  # spread: max(1.41, 2.12) points
    text = markdown(rows, found, {"epochs": 3})
    assert "equal training cost, ndsnn minus lth @ ndsnn cost (0.15 epochs, 110% of ndsnn's FLOPs): +18.00" in text
    assert "Dense, ndsnn minus spikingjelly: +0.50 points (seed 0: +1.00, seed 1: +0.00), within" in text
    one_seed = claims(table_rows([s for s in summaries if s["run"]["seed"] == 0]))["dense_fidelity"]["spikingjelly"]
    assert one_seed["within_twice_the_spread"] is None  # a spread of 0 over one seed judges nothing
    assert "one seed so far: no spread over seeds to judge it by." in markdown(
        table_rows(summaries[::2]), {"dense_fidelity": {"spikingjelly": one_seed}}, {}
    )


def test_tiny_sweep_with_equal_cost_and_peer_rows(tmp_path):
    pytest.importorskip("spikingjelly")
    data = write_fake_fashion_mnist(tmp_path / "data", 64, 32)
    budget = dataclasses.replace(BUDGETS["cpu"], methods=("dense", "ndsnn", "lth"), sparsities=(0.75,), seeds=(0,),
                                 epochs=2, timesteps=1, batch_size=8, train_samples=64, test_samples=None)  # fmt: skip
    summaries = run_sweep(budget, tmp_path / "sweep", str(data), in_process=True, log=lambda line: None)
    by_name = {RunSpec(**{k: v for k, v in s["run"].items() if k != "label"}).name: s for s in summaries}
    assert set(by_name) == {"dense-s0-seed0", "ndsnn-s0.75-seed0", "lth-s0.75-seed0", "lth-at-ndsnn-cost-s0.75-seed0",
                            "ndsnn-at-lth-cost-s0.75-seed0", "dense-spikingjelly-seed0"}  # fmt: skip
    flops = {name: s["training_cost"]["flops"] for name, s in by_name.items()}
    # the scaled runs land near their references' FLOPs (whole steps, per-round masks: not exactly)
    assert flops["lth-at-ndsnn-cost-s0.75-seed0"] == pytest.approx(flops["ndsnn-s0.75-seed0"], rel=0.35)
    assert flops["ndsnn-at-lth-cost-s0.75-seed0"] == pytest.approx(flops["lth-s0.75-seed0"], rel=0.05)
    assert by_name["lth-at-ndsnn-cost-s0.75-seed0"]["rounds"] == 3
    peer = by_name["dense-spikingjelly-seed0"]
    assert peer["trainer"] == "spikingjelly" and peer["training_cost"]["flops"] == pytest.approx(
        flops["dense-s0-seed0"]
    )
    results = write_report(summaries, budget.to_dict(), tmp_path / "sweep")
    text = (tmp_path / "sweep" / "results.md").read_text()
    assert "| lth @ ndsnn cost | 75% |" in text and "| dense (spikingjelly) | 0% |" in text
    assert "Dense, ndsnn minus spikingjelly" in text and len(results["claims"]["equal_cost"]) == 2


def test_report_only_tables_the_finished_runs_and_lists_the_others(tmp_path, capsys):
    """A sweep under way: `--report-only` trains nothing, tables what finished and names what did not."""
    data = write_fake_fashion_mnist(tmp_path / "data", 64, 2000)  # the cpu budget tests 2000 images
    out = tmp_path / "sweep"
    common = ["reproduce", "fashion-mnist", "--sparsities", "0.75", "--seeds", "0", "--epochs", "1", "--timesteps",
              "1", "--train-samples", "64", "--data-dir", str(data), "--out", str(out), "--in-process"]  # fmt: skip
    assert main([*common, "--methods", "dense", "set"]) == 0
    capsys.readouterr()
    assert main([*common, "--methods", "dense", "set", "static", "--report-only"]) == 0
    assert not (out / "runs" / "static-s0.75-seed0" / "summary.json").exists()  # nothing trained
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["table"] if r["framework"] == "ndsnn"] == ["dense", "set"]
    assert results["settings"]["unfinished_runs"] == ["static-s0.75-seed0"]
    assert "Not finished yet, so not in the table: static-s0.75-seed0." in (out / "results.md").read_text()
    assert "static-s0.75-seed0: not finished, left out" in capsys.readouterr().out
