"""`torchrun --nproc_per_node=2 -m ndsnn train` on CPU (gloo): masks checked equal on both ranks at every
update, metrics reduced over the ranks, rank 0's files; and the mask check does catch a divergence."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ndsnn.cli import main
from ndsnn.train import load_checkpoint
from ndsnn.train.distributed import DistContext, masks_digest

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available in this build")  # fmt: skip


def test_torchrun_two_processes(tmp_path, capsys):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ndsnn",
               "train", "--epochs", "2", "--timesteps", "2", "--debug-masks", "--update-interval", "2", "--out",
               str(out), "--no-progress", "--no-plots"]  # fmt: skip
    if torch.cuda.device_count() < 2:  # one process per GPU: with fewer GPUs the two ranks train on CPU (gloo)
        command += ["--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == 2 * 12  # 1438 samples: 719 per rank, batches of 64
    assert summary["sparsity"] == pytest.approx(0.9, abs=2e-3)
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    assert [r["test_samples"] for r in epochs] == [359, 359]  # both ranks' shares, summed
    method_log = load_checkpoint(out / "checkpoint.pt")["method"]["log"]
    assert len(method_log) >= 5  # updates every 2 steps, each hash-checked across the ranks
    # the reduced accuracy equals one process evaluating the whole test split with the saved model
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-12)


def _diverging_worker(rank: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    context = DistContext(rank, 2, rank)
    masks = [torch.ones(3, 3, dtype=torch.bool)]
    context.check_same(masks_digest(masks), "masks")  # equal: passes
    masks[0][rank, 0] = False  # different on each rank
    try:
        context.check_same(masks_digest(masks), "masks")
        outcome = "passed"
    except RuntimeError as error:
        outcome = str(error)
    with open(f"{result_file}.{rank}", "w") as handle:
        handle.write(outcome)
    dist.destroy_process_group()


def test_mask_check_catches_divergence(tmp_path):
    mp.spawn(_diverging_worker, args=(str(tmp_path / "init"), str(tmp_path / "result")), nprocs=2, join=True)
    for rank in range(2):
        assert (tmp_path / f"result.{rank}").read_text().startswith("masks differ across ranks")
