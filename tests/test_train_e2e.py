"""`ndsnn train` end to end on real data: the default job learns, a stopped or killed run resumes to the
very numbers of an uninterrupted one, LTH's rounds and their cost, every dataset format and model, and the
evaluate / export commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ndsnn.cli import main
from ndsnn.data import testing as fake_data
from ndsnn.train import load_checkpoint
from ndsnn.train.trainer import RUNTIME_OPTIONS

FASHION = Path("/usr/share/datasets/fashion-mnist")
# 23 steps per epoch on digits; --deterministic makes resumed GPU runs bit-exact (CPU runs are anyway)
QUICK = ["--epochs", "3", "--timesteps", "2", "--no-progress", "--no-plots", "--deterministic"]


def _train(*args: str) -> dict:
    assert main(["train", *args, "--json"]) == 0
    return None


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _assert_same_run(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert first["step"] == second["step"]
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    for state_a, state_b in zip(first["optimizer"]["state"].values(), second["optimizer"]["state"].values(),
                                strict=True):  # fmt: skip
        assert torch.equal(state_a["momentum_buffer"], state_b["momentum_buffer"])
    assert first["method"]["log"] == second["method"]["log"]
    assert first["cost"] == second["cost"]
    # every metrics line, step lines (spike rates, input rates) included; only the wall clock may differ
    lines = [(p / "metrics.jsonl").read_text().splitlines() for p in (a, b)]
    strip = [[_comparable(json.loads(r)) for r in run] for run in lines]
    assert len(strip[0]) == len(strip[1]) and strip[0] == strip[1]
    assert _summary(a)["spike_rates"] == _summary(b)["spike_rates"]
    assert _summary(a)["input_rates"] == _summary(b)["input_rates"]


def _comparable(record: dict) -> dict:
    """A metrics line without what may differ between an interrupted run and one that was not: the wall
    clock, and the runtime options in the start line (where to write, when to stop)."""
    record = {k: v for k, v in record.items() if k != "time_s"}
    if "config" in record:
        record["config"] = {k: v for k, v in record["config"].items() if k not in RUNTIME_OPTIONS}
    return record


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    _train(*QUICK, "--out", str(out))
    return out


def test_default_job_learns_and_writes_everything(tmp_path):
    """The README's main job, exactly as written (plus where to write): NDSNN, 90% sparsity, digits."""
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "ndsnn", "train", "--out", str(out)], capture_output=True,
                            text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout and "FLOPs" in result.stdout and "sparsity 90.00%" in result.stdout
    summary = _summary(out)
    assert summary["method"] == "ndsnn" and summary["dataset"] == "digits" and summary["model"] == "convnet"
    assert summary["test_accuracy"] > 0.8  # chance is 0.1
    assert summary["sparsity"] == pytest.approx(0.9, abs=2e-3)
    cost = summary["training_cost"]
    assert 0 < cost["flops"] < cost["dense_flops"] and 0 < cost["sops"] < cost["flops"]
    assert 0 < min(summary["spike_rates"].values()) and max(summary["spike_rates"].values()) < 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 20 and epochs[-1]["test_samples"] == 359
    densities = [r["density"] for r in records if r["kind"] == "step"]
    assert densities[0] > 0.3 and densities[-1] == pytest.approx(0.1, abs=2e-3)  # NDSNN: decreasing density
    assert all(a >= b - 1e-9 for a, b in zip(densities, densities[1:], strict=False))
    for name in ("curves", "density", "layer_density", "spike_rates"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    command = [sys.executable, "-m", "ndsnn", "evaluate", "--checkpoint", str(out / "model_compact.pt"), "--json"]
    evaluated = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-12)


@pytest.mark.parametrize("stop", [30, 35, 46])  # mid-epoch (35: between metric lines), and at an epoch end
def test_stopped_run_resumes_exactly(reference, tmp_path, stop):
    out = tmp_path / "run"
    _train(*QUICK, "--out", str(out), "--stop-after-steps", str(stop))
    assert load_checkpoint(out / "checkpoint.pt")["step"] == stop
    assert not (out / "summary.json").exists()
    _train("--resume", str(out / "checkpoint.pt"), "--no-progress", "--no-plots")
    _assert_same_run(reference, out)
    assert _summary(out)["test_accuracy"] == _summary(reference)["test_accuracy"]


def test_killed_run_resumes_exactly(reference, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ndsnn", "train", *QUICK, "--out", str(out), "--checkpoint-interval", "4"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(out / "checkpoint.pt")["step"]
    assert 0 < killed_at < 69, "the run finished before it could be killed"
    _train("--resume", "--out", str(out), "--no-progress", "--no-plots")
    _assert_same_run(reference, out)


def test_resume_refuses_other_options_and_other_runs(reference, tmp_path, capsys):
    assert main(["train", "--resume", str(reference / "checkpoint.pt"), "--sparsity", "0.5"]) == 2
    assert "trained with other options: sparsity=0.9 (now 0.5)" in capsys.readouterr().err
    assert main(["train", *QUICK, "--out", str(reference)]) == 2
    assert "pass --resume to continue it or --overwrite" in capsys.readouterr().err


def test_lth_trains_all_rounds_and_counts_their_cost(tmp_path):
    out = tmp_path / "lth"
    _train("--method", "lth", "--sparsity", "0.5", "--epochs", "1", "--timesteps", "2", "--out", str(out),
           "--no-progress", "--no-plots")  # fmt: skip
    summary = _summary(out)
    assert summary["rounds"] == 4 and summary["steps"] == 4 * 23  # densities 1, 0.75, 0.5625, 0.5
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    epochs = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if '"epoch"' in r]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    assert [r["round"] for r in epochs] == [0, 1, 2, 3]
    assert [round(r["density"], 3) for r in epochs] == [1.0, 0.75, 0.562, 0.5]
    flops = [0.0] + [r["cost"]["flops"] for r in epochs]
    dense = [0.0] + [r["cost"]["dense_flops"] for r in epochs]
    per_round = [(flops[i + 1] - flops[i]) / (dense[i + 1] - dense[i]) for i in range(4)]
    assert per_round[0] == pytest.approx(1.0)  # the dense first round costs what dense training costs
    assert all(b < a for a, b in zip(per_round, per_round[1:], strict=False))  # later rounds are sparser, cheaper
    assert summary["training_cost"]["flops"] == pytest.approx(flops[-1])  # the sum over all rounds


@pytest.mark.skipif(
    not FASHION.is_dir(), reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
)
def test_short_fashion_mnist_run_learns(tmp_path):
    out = tmp_path / "fashion"
    _train("--dataset", "fashion-mnist", "--train-samples", "3000", "--test-samples", "1000", "--epochs", "2",
           "--timesteps", "2", "--out", str(out), "--no-progress", "--no-plots")  # fmt: skip
    summary = _summary(out)
    assert summary["test_accuracy"] > 0.55  # chance is 0.1
    assert summary["sparsity"] == pytest.approx(0.9, abs=2e-3)


@pytest.mark.parametrize(
    "dataset, model, writer",
    [("cifar10", "resnet19", fake_data.write_fake_cifar10), ("cifar100", "vgg16", fake_data.write_fake_cifar100),
     ("tiny-imagenet", "resnet19", fake_data.write_fake_tiny_imagenet)],
)  # fmt: skip
def test_every_format_and_model_trains(tmp_path, dataset, model, writer):
    data_dir = writer(tmp_path / "data", 12, 6)
    out = tmp_path / "run"
    _train("--dataset", dataset, "--model", model, "--data-dir", str(data_dir), "--epochs", "1", "--timesteps", "1",
           "--batch-size", "6", "--method", "rigl", "--out", str(out), "--no-progress", "--no-plots")  # fmt: skip
    summary = _summary(out)
    assert summary["steps"] == 2 and summary["completed"]
    assert summary["sparsity"] == pytest.approx(0.9, abs=2e-3)
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_amp_and_workers(tmp_path):
    out = tmp_path / "amp"
    _train("--epochs", "1", "--timesteps", "2", "--amp", "--workers", "2", "--out", str(out), "--no-progress",
           "--no-plots")  # fmt: skip
    summary = _summary(out)
    assert summary["completed"] and summary["test_loss"] == summary["test_loss"]  # finite, not NaN


def test_export_command(reference, tmp_path, capsys):
    target = tmp_path / "small.pt"
    assert main(["export", "--checkpoint", str(reference / "checkpoint.pt"), "--out", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(target), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_accuracy"] == pytest.approx(_summary(reference)["test_accuracy"], abs=1e-12)
    assert result["sparsity"] == pytest.approx(_summary(reference)["sparsity"])


@pytest.mark.parametrize("method", ["criticality", "pq_index", "attention"])
def test_published_methods_train_from_the_command_line(tmp_path, method):
    out = tmp_path / method
    _train("--method", method, "--epochs", "4", "--timesteps", "2", "--out", str(out), "--no-progress", "--no-plots")
    summary = _summary(out)
    assert summary["completed"] and summary["test_accuracy"] > 0.2  # chance is 0.1
    assert summary["training_cost"]["method_decision_ops"] > 0
    assert summary["compression_ratio"] == pytest.approx(1 / (1 - summary["sparsity"]))
    if method != "pq_index":  # pq_index's final density adapts (the target is its floor)
        assert summary["sparsity"] == pytest.approx(0.9, abs=2e-3)
    else:
        assert 0.5 - 1e-3 <= summary["sparsity"] <= 0.9 + 2e-3
    # evaluate and export rebuild the model, learned thresholds and leaks (attention) included
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--json"]) == 0
    compact = tmp_path / "compact.pt"
    assert main(["export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(compact)]) == 0
    assert main(["evaluate", "--checkpoint", str(compact), "--json"]) == 0
