"""A run's files stay right whatever happens around it: a diverging loss stops the run with the last good
checkpoint kept, two runs cannot share an output directory, a resumed copy writes only where it lives, a
killed run's temporary files are cleaned up, and everything written is standard JSON."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ndsnn.cli import main
from ndsnn.train import load_checkpoint
from ndsnn.train.json_safe import dumps
from ndsnn.train.run_directory import LOCK_NAME, RunDirectoryLock

FAST = ["--epochs", "1", "--timesteps", "1", "--update-interval", "10", "--no-progress", "--no-plots"]


def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity, which are not JSON."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))


def test_a_diverging_run_stops_with_its_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", *FAST, "--lr", "1e6", "--checkpoint-interval", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "training diverged: " in err and ("the loss is" in err or "is not finite" in err), err
    state = load_checkpoint(out / "checkpoint.pt")
    assert f"still holds step {state['step']}" in err and state["step"] >= 1
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    for line in (out / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)
    assert not (out / "summary.json").exists()


def test_divergence_on_the_first_step_says_no_checkpoint_was_written(tmp_path, capsys):
    code = main(["train", *FAST, "--lr", "1e30", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint was written before it" in err and "lower --lr (now 1e+30)" in err, err


def test_json_output_is_standard():
    text = dumps({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": (math.nan,)}})
    assert _strict_json(text) == {"a": None, "b": [None, None, 1.5], "c": {"d": [None]}}


def _start_run(out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "ndsnn", "train", "--epochs", "50", "--timesteps", "1", "--no-progress",
               "--no-plots", "--checkpoint-interval", "5", "--out", str(out), *extra]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not (out / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    return process


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    first = _start_run(out)
    try:
        code = main(["train", *FAST, "--out", str(out), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and f"--out {out} is in use by another run (process {first.pid})" in err, err
        code = main(["train", "--resume", str(out / "checkpoint.pt"), "--no-progress"])
        assert code == 2 and "is in use by another run" in capsys.readouterr().err
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    with RunDirectoryLock(out):  # the kernel released the killed run's lock
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_a_killed_runs_temporary_files_are_removed_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--stop-after-steps", "3", "--checkpoint-interval", "1", "--out", str(out)]) == 0
    stale = [out / ".checkpoint.pt.x1y2z3.tmp", out / ".metrics.jsonl.tmp", out / ".model_compact.pt.abc.tmp"]
    for path in stale:
        path.write_bytes(b"half written")
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--no-progress", "--no-plots"]) == 0
    assert not any(path.exists() for path in stale)
    assert (out / "summary.json").exists()


def test_a_resumed_copy_writes_only_where_it_lives(tmp_path):
    original = tmp_path / "original"
    assert main(["train", *FAST, "--epochs", "2", "--stop-after-steps", "30", "--out", str(original)]) == 0
    before = {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()}
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    assert main(["train", "--resume", str(copy / "checkpoint.pt"), "--no-progress", "--no-plots"]) == 0
    assert {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()} == before  # untouched
    summary = _strict_json((copy / "summary.json").read_text())
    assert summary["completed"] and summary["steps"] == 46
    assert load_checkpoint(copy / "checkpoint.pt")["step"] == 46


def test_a_finished_run_resumed_into_a_new_directory(tmp_path, capsys):
    done = tmp_path / "done"
    assert main(["train", *FAST, "--out", str(done)]) == 0
    capsys.readouterr()
    before = (done / "checkpoint.pt").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    assert main(["train", "--resume", str(done / "checkpoint.pt"), "--out", str(elsewhere), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    first, second = (_strict_json((d / "summary.json").read_text()) for d in (done, elsewhere))
    assert second["test_accuracy"] == first["test_accuracy"] and second["steps"] == first["steps"]
    assert (elsewhere / "metrics.jsonl").read_text() == (done / "metrics.jsonl").read_text()
    assert (done / "checkpoint.pt").read_bytes() == before
    other = tmp_path / "other"
    assert main(["train", *FAST, "--out", str(other)]) == 0
    capsys.readouterr()
    code = main(["train", "--resume", str(done / "checkpoint.pt"), "--out", str(other), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {other} holds another checkpoint" in err, err
