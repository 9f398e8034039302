"""Checks shared by the sparsity-method tests."""

from __future__ import annotations

import torch


def assert_pruned_zero(method, optimizer) -> None:
    """Every pruned weight, and its SGD momentum, is exactly zero."""
    for _, layer in method.layers:
        assert torch.count_nonzero(layer.weight[~layer.weight_mask]) == 0
        momentum = optimizer.state.get(layer.weight, {}).get("momentum_buffer")
        if momentum is not None:
            assert torch.count_nonzero(momentum[~layer.weight_mask]) == 0
