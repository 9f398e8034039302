"""An optimizer step whose work on a masked weight is proportional to its kept weights.

KeptOnlyOptimizer wraps any torch.optim optimizer (SGD with momentum, Adam, AdamW, ...). For each masked weight
sparser than `max_density` it gathers the kept weights, their gradients and their optimizer state into compact
tensors, runs the very same optimizer class (same hyperparameters, read from the wrapped one's groups at every
step) on those, and scatters the results back; every other parameter is stepped by the wrapped optimizer
itself. Element by element this is the same arithmetic as the dense step on the kept weights (tested
bit-identical for SGD, Adam and AdamW); pruned weights and their state are never touched, so they stay
exactly zero (their gradients are zero, or dense only on grow steps, whose values a dense step would zero
right after). The wrapped optimizer keeps the authoritative, dense-shaped state: state_dict(), schedulers and
the sparsity methods' state hygiene work on it unchanged.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..nn.convert import masked_modules
from ..ops.kept_index import kept_index


class KeptOnlyOptimizer:
    """optimizer.step() with the work on each sparse masked weight done over its kept weights only."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, max_density: float = 0.5) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.max_density = max_density
        # weight -> (mask, groups): the index shared with the layer's own op (cached on the mask per groups)
        self.masks = {
            layer.weight: (layer.weight_mask, getattr(layer, "groups", 1)) for _, layer in masked_modules(model)
        }
        self._compact: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}  # weight -> (indices, compact)
        self._shadow: torch.optim.Optimizer | None = None
        self._shadow_key: tuple = ()

    def __getattr__(self, name: str):  # param_groups, state, zero_grad, state_dict, ...: the wrapped optimizer's
        return getattr(self.optimizer, name)

    def _selected(self) -> list[tuple[int, torch.Tensor]]:
        """(group index, weight) of the masked weights stepped over their kept entries this time."""
        chosen = []
        for index, group in enumerate(self.optimizer.param_groups):
            for p in group["params"]:
                if p in self.masks and p.grad is not None and not p.grad.is_sparse:
                    if self._indices(p).numel() <= self.max_density * p.numel():
                        chosen.append((index, p))
        return chosen

    def _shadow_for(self, chosen: list[tuple[int, torch.Tensor]]) -> torch.optim.Optimizer:
        """An optimizer of the wrapped one's class over compact tensors of the chosen weights' kept entries,
        rebuilt when the set of weights or any of their masks changes."""
        indices = [self._indices(p) for _, p in chosen]
        key = tuple((id(p), id(i)) for (_, p), i in zip(chosen, indices, strict=True))
        if self._shadow is not None and key == self._shadow_key:
            return self._shadow
        self._compact = {}
        groups: dict[int, list[torch.Tensor]] = {}
        for (group_index, p), idx in zip(chosen, indices, strict=True):
            compact = torch.zeros(idx.numel(), dtype=p.dtype, device=p.device, requires_grad=True)
            self._compact[p] = (idx, compact)
            groups.setdefault(group_index, []).append(compact)
        accepted = inspect.signature(type(self.optimizer).__init__).parameters
        defaults = {k: v for k, v in self.optimizer.defaults.items() if k in accepted and k != "params"}
        param_groups = [{**self._hyperparameters(g), "params": params} for g, params in groups.items()]
        self._shadow = type(self.optimizer)(param_groups, **defaults)
        self._shadow_groups = list(groups)
        self._shadow_key = key
        return self._shadow

    def _indices(self, weight: torch.Tensor) -> torch.Tensor:
        mask, groups = self.masks[weight]
        return kept_index(mask, groups).out_flat

    def _hyperparameters(self, group_index: int) -> dict:
        return {k: v for k, v in self.optimizer.param_groups[group_index].items() if k != "params"}

    @torch.no_grad()
    def step(self, closure=None):
        chosen = self._selected()
        if not chosen:
            return self.optimizer.step(closure)
        shadow = self._shadow_for(chosen)
        for shadow_group, group_index in zip(shadow.param_groups, self._shadow_groups, strict=True):
            shadow_group.update(self._hyperparameters(group_index))  # the learning rate of this step, ...
        held = {}
        for _, p in chosen:  # gather: weights, gradients, state
            idx, compact = self._compact[p]
            compact.copy_(p.view(-1)[idx])
            compact.grad = p.grad.view(-1)[idx]
            state = self.optimizer.state.get(p, {})
            shadow.state[compact] = {k: _gather(v, p, idx) for k, v in state.items()}
            held[p], p.grad = p.grad, None  # the wrapped optimizer steps the others
        try:
            loss = self.optimizer.step(closure)
            shadow.step()
        finally:
            for p, grad in held.items():
                p.grad = grad
        for _, p in chosen:  # scatter back
            idx, compact = self._compact[p]
            p.view(-1)[idx] = compact
            state = self.optimizer.state.setdefault(p, {})
            for k, v in shadow.state[compact].items():
                if isinstance(v, torch.Tensor) and v.shape == compact.shape:
                    dense = state.get(k)
                    if not isinstance(dense, torch.Tensor) or dense.shape != p.shape:
                        dense = state[k] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    dense.view(-1)[idx] = v
                else:
                    state[k] = v.clone() if isinstance(v, torch.Tensor) else v
            compact.grad = None
        return loss


def _gather(value, weight: torch.Tensor, idx: torch.Tensor):
    """A state entry's kept part (tensors of the weight's shape), or the entry itself (a step counter)."""
    if isinstance(value, torch.Tensor) and value.shape == weight.shape:
        return value.view(-1)[idx].clone()
    return value.clone() if isinstance(value, torch.Tensor) else value
