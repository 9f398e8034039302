"""A run's length and its method's schedule: a schedule too short for its mask updates is said once (with the
numbers and what to change), runs of a fraction of an epoch, and LTH rounds that end within an epoch, resumed
to the very numbers of an uninterrupted run."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
from test_train_e2e import _assert_same_run

from ndsnn.cli import main
from ndsnn.train import TrainConfig, load_checkpoint
from ndsnn.train.trainer import ScheduleWarning, Trainer

FAST = ["--timesteps", "1", "--no-progress", "--no-plots"]  # digits: 23 steps per epoch at batch 64


def _trainer(tmp_path: Path, **options) -> Trainer:
    return Trainer(TrainConfig(timesteps=1, progress=False, **options), tmp_path / "run")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_one_epoch_ndsnn_run_is_warned_with_numbers_and_advice(tmp_path):
    with pytest.warns(ScheduleWarning) as caught:
        trainer = _trainer(tmp_path, epochs=1)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert trainer.steps_per_epoch == 23 and trainer.method.update_interval == 1
    assert "ndsnn: 17 mask updates in a run of 23 steps (every 1 step, up to step 17)" in message
    assert "the density goes from 0.5 down to 0.1" in message
    assert "train at least 250 steps (--epochs 11 here, at 23 steps an epoch)" in message
    assert "--update-interval 10 or more" in message
    assert trainer.schedule_warning == message


def test_the_default_job_and_methods_without_updates_are_not_warned(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScheduleWarning)
        assert _trainer(tmp_path / "a").schedule_warning is None  # 460 steps, an update every 18
        assert _trainer(tmp_path / "b", epochs=1, method="static").schedule_warning is None
        assert _trainer(tmp_path / "c", epochs=1, method="lth").schedule_warning is None


def test_a_short_explicit_interval_is_warned_with_its_own_advice(tmp_path):
    with pytest.warns(ScheduleWarning, match=r"raise --update-interval \(now 3\) to 10 or more"):
        _trainer(tmp_path, method="set", update_interval=3)


def test_the_command_says_it_once_and_the_run_keeps_it(tmp_path, capsys):
    out = tmp_path / "short"
    assert main(["train", "--epochs", "1", *FAST, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("ndsnn train: warning: ndsnn: 17 mask updates") == 1
    assert "ScheduleWarning" not in err  # one line, not a Python warning
    warning = [r for r in _records(out) if r["kind"] == "warning"]
    assert len(warning) == 1 and "--epochs 11" in warning[0]["message"]
    assert json.loads((out / "summary.json").read_text())["schedule_warning"] == warning[0]["message"]


def test_a_fraction_of_an_epoch_trains_that_many_steps(tmp_path):
    out = tmp_path / "half"
    assert main(["train", "--epochs", "0.5", "--method", "static", *FAST, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["epochs"] == 1 and summary["round_steps"] == 12  # round(11.5)
    epochs = [r for r in _records(out) if r["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["step"] == 12 and epochs[0]["test_samples"] > 0
    assert summary["config"]["epochs"] == 0.5
    assert main(["train", "--epochs", "0", *FAST, "--out", str(tmp_path / "zero")]) == 2


def test_lth_rounds_end_within_epochs(tmp_path):
    out = tmp_path / "lth"
    assert main(["train", "--method", "lth", "--sparsity", "0.75", "--method-option", "prune_rate=0.5",
                 "--epochs", "0.5", *FAST, "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["steps"] == 36 and summary["epochs"] == 2  # 23 + 13 steps
    assert summary["update_interval"] is None  # masks change between rounds only
    assert summary["sparsity"] == pytest.approx(0.75, abs=1e-3)
    logged = {r["step"]: r["lr"] for r in _records(out) if r["kind"] == "step"}
    assert {10, 20, 23, 30, 36} <= set(logged)
    for step, lr in logged.items():  # the cosine schedule starts again with every round (steps 12 and 24)
        position = (step - 12 * min(step // 12, 2)) / 12
        assert lr == pytest.approx(0.05 * (1 + math.cos(math.pi * position)))
    log = load_checkpoint(out / "checkpoint.pt")["method"]["log"]
    assert [(r["round"], r["step"]) for r in log] == [(1, 12), (2, 24)]


@pytest.mark.parametrize("stop", [13, 24])
def test_lth_within_epochs_resumes_exactly(tmp_path, stop):
    """Stopped inside round 1 and inside epoch 1 (13), or at a round boundary within an epoch (24)."""
    args = ["--method", "lth", "--sparsity", "0.75", "--method-option", "prune_rate=0.5", "--epochs", "0.5",
            "--timesteps", "2", "--no-progress", "--no-plots", "--deterministic"]  # fmt: skip
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", *args, "--out", str(whole)]) == 0
    assert main(["train", *args, "--out", str(parts), "--stop-after-steps", str(stop)]) == 0
    assert main(["train", "--resume", str(parts / "checkpoint.pt")]) == 0
    _assert_same_run(whole, parts)
