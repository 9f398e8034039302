"""Keep pruned weights exactly zero through optimizer steps: the weights and their optimizer state.

Gradients at pruned positions are already zero (the sparse ops return none there), but weight decay,
momentum carried from before a prune, or Adam's moments could still move a pruned weight. A post-step hook
zeroes, after every step, the pruned positions of each masked weight and of every state tensor of its shape
(SGD's momentum_buffer, Adam's exp_avg / exp_avg_sq, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from .convert import masked_modules


def weight_state(optimizer: torch.optim.Optimizer, weight: torch.Tensor) -> list[torch.Tensor]:
    """The optimizer's per-element state of weight (momentum, Adam moments): its tensors of weight's shape."""
    return [
        value
        for value in optimizer.state.get(weight, {}).values()
        if isinstance(value, torch.Tensor) and value.shape == weight.shape
    ]


@torch.no_grad()
def zero_pruned_(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Zero every masked weight, and its optimizer state, at pruned positions."""
    for _, module in masked_modules(model):
        mask = module.weight_mask
        module.weight.mul_(mask)
        if optimizer is None:
            continue
        for value in weight_state(optimizer, module.weight):
            value.mul_(mask)


def keep_pruned_zero(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Register the hook on optimizer; returns its handle (``handle.remove()`` to stop)."""

    def hook(opt: torch.optim.Optimizer, args, kwargs) -> None:
        zero_pruned_(model, opt)

    return optimizer.register_step_post_hook(hook)
