"""A pruning mask for any module with a ``weight`` Parameter (beyond Conv2d / Linear, which become sparse
layers): a bool ``weight_mask`` buffer registered on the module, and an adapter with the sparse layers'
interface. The module's forward is unchanged and computes with the weight as stored; pruned entries are
kept zero by zeroing them whenever the mask changes and after every optimizer step (keep_pruned_zero, or
a sparsity method's step)."""

from __future__ import annotations

import torch
from torch import nn

from .sparse_layers import MaskedWeight


class MaskedModuleWeight(MaskedWeight):
    """The MaskedWeight interface (density, set_mask, ...) over module.weight and module.weight_mask."""

    def __init__(self, module: nn.Module) -> None:
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            raise ValueError(f"{type(module).__name__} has no weight Parameter to mask")
        if not isinstance(getattr(module, "weight_mask", None), torch.Tensor):
            module.register_buffer("weight_mask", torch.ones_like(weight, dtype=torch.bool))
        self.module = module
        self.dense_weight_grad = False  # plain modules compute the dense gradient anyway

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def weight_mask(self) -> torch.Tensor:
        return self.module.weight_mask
