"""Convert an existing model's nn.Conv2d / nn.Linear layers into sparse layers in place, keeping their weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from .masked_module import MaskedModuleWeight
from .sparse_layers import MaskedWeight, SparseLinear, SparseSpikingConv2d


def _sparse_conv_like(conv: nn.Conv2d) -> SparseSpikingConv2d:
    sparse = SparseSpikingConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
    )  # fmt: skip
    sparse.weight, sparse.bias = conv.weight, conv.bias  # the same Parameters: optimizers keep working
    sparse.weight_mask = torch.ones_like(conv.weight, dtype=torch.bool)
    return sparse


def _sparse_linear_like(linear: nn.Linear) -> SparseLinear:
    sparse = SparseLinear(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
    sparse.weight, sparse.bias = linear.weight, linear.bias
    sparse.weight_mask = torch.ones_like(linear.weight, dtype=torch.bool)
    return sparse


def sparsify(model: nn.Module, include: Callable[[str, nn.Module], bool] | None = None) -> nn.Module:
    """Replace every nn.Conv2d and nn.Linear in model (or those include(name, module) accepts) by
    SparseSpikingConv2d / SparseLinear sharing the same weight and bias Parameters, with an all-kept mask.
    Returns model (changed in place); a model that is itself a Conv2d / Linear is returned converted."""
    if isinstance(model, MaskedWeight):
        return model
    if type(model) in (nn.Conv2d, nn.Linear):
        if include is not None and not include("", model):
            return model
        return _sparse_conv_like(model) if isinstance(model, nn.Conv2d) else _sparse_linear_like(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) not in (nn.Conv2d, nn.Linear) or (include is not None and not include(full, child)):
                continue
            converted = _sparse_conv_like(child) if isinstance(child, nn.Conv2d) else _sparse_linear_like(child)
            converted.train(child.training)
            setattr(module, child_name, converted)
    return model


def masked_modules(model: nn.Module) -> Iterator[tuple[str, MaskedWeight | MaskedModuleWeight]]:
    """(name, layer) of every masked weight: the sparse layers, and other modules given a weight_mask
    (MaskedModuleWeight adapters over them)."""
    for name, module in model.named_modules():
        if isinstance(module, MaskedWeight):
            yield name, module
        elif isinstance(getattr(module, "weight_mask", None), torch.Tensor) and isinstance(
            getattr(module, "weight", None), nn.Parameter
        ):
            yield name, MaskedModuleWeight(module)
