"""Two-process DDP (gloo, CPU): every rank makes the same mask decisions.

Each rank trains on its own data; DDP averages the gradients (dense ones too, on the steps before a grow),
so magnitudes and gradients, and with the same seed the random choices, are equal on every rank.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sparse_checks import ddp_mask_history
from torch import nn

from ndsnn.sparse import create

WORLD = 2


def _worker(rank: int, init_file: str, method_name: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        # the method converts the layers, so it comes before the DDP wrapper
        method = create(method_name, model, optimizer, sparsity=0.8, update_interval=2, total_steps=8, seed=3)
        # broadcast_buffers=False: DDP would otherwise copy rank 0's masks (buffers) to the others at every
        # forward and hide diverging decisions
        ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        masks = ddp_mask_history(ddp, optimizer, method, rank, steps=8)
        torch.save({"masks": masks, "log": method.log}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method_name", ["set", "rigl", "ndsnn"])
def test_masks_stay_identical_across_ranks(tmp_path, method_name):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    init_file = str(tmp_path / "init")
    mp.spawn(_worker, args=(init_file, method_name, str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert len(results[0]["log"]) == len(results[1]["log"]) > 0
    for step_a, step_b in zip(results[0]["masks"], results[1]["masks"], strict=True):  # after every step
        for a, b in zip(step_a, step_b, strict=True):
            assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(results[0]["masks"][0], results[0]["masks"][-1], strict=True))
