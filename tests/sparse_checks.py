"""Checks shared by the sparsity-method tests."""

from __future__ import annotations

import torch
from torch import nn


def assert_pruned_zero(method, optimizer) -> None:
    """Every pruned weight, and its SGD momentum, is exactly zero."""
    for _, layer in method.layers:
        assert torch.count_nonzero(layer.weight[~layer.weight_mask]) == 0
        momentum = optimizer.state.get(layer.weight, {}).get("momentum_buffer")
        if momentum is not None:
            assert torch.count_nonzero(momentum[~layer.weight_mask]) == 0


def small_model() -> nn.Module:
    """Two convolutions and a linear layer, seeded: the model the method tests share."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 5)
    )


def small_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and labels of `step` for small_model, the same in every run."""
    g = torch.Generator().manual_seed(step)
    return torch.randn(6, 2, 6, 6, generator=g), torch.randint(0, 5, (6,), generator=g)


def ddp_mask_history(ddp: nn.Module, optimizer, method, rank: int, steps: int) -> list[list[torch.Tensor]]:
    """Trains `steps` steps on rank-specific data (4x2x6x6 inputs, 4 classes) and returns the masks after each."""
    g = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    masks = []
    for _ in range(steps):
        x, y = torch.randn(4, 2, 6, 6, generator=g), torch.randint(0, 4, (4,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        optimizer.step()
        method.step()
        masks.append([layer.weight_mask.clone() for _, layer in method.layers])
    return masks
