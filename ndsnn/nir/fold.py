"""Batch norm folded into the convolution or linear layer before it, for inference: the result is one sparse
layer with a bias whose pruned weights are exactly zero."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import SparseLinear, SparseSpikingConv2d
from .errors import describe, unsupported

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _mask(layer: nn.Conv2d | nn.Linear) -> torch.Tensor:
    mask = getattr(layer, "weight_mask", None)
    return mask.bool() if isinstance(mask, torch.Tensor) else torch.ones_like(layer.weight, dtype=torch.bool)


def _norm_affine(norm: nn.Module, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode batch norm, in float64: y = x * scale + shift per channel."""
    if type(norm) not in NORMS:
        raise unsupported(where, describe(norm), "only BatchNorm1d / BatchNorm2d can be folded")
    if norm.running_mean is None or norm.running_var is None:
        raise unsupported(where, describe(norm), "batch norm without running statistics has no inference form")
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.detach().double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    return scale, beta - mean * scale


@torch.no_grad()
def fold(layer: nn.Conv2d | nn.Linear, norm: nn.Module | None = None, where: str = "") -> nn.Module:
    """A SparseSpikingConv2d / SparseLinear equal to `layer` followed by `norm` (eval mode) if given.

    The fold is computed in float64 and rounded once to the layer's dtype. Its mask is the layer's mask (all
    kept for dense layers) where the folded weight is nonzero, and every other weight is exactly +0.0."""
    weight = layer.weight.detach().double()
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    if norm is not None:
        scale, shift = _norm_affine(norm, where)
        if scale.numel() != weight.shape[0]:
            raise unsupported(where, describe(norm), f"{scale.numel()} channels after a layer of {weight.shape[0]}")
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        bias = bias * scale + shift
    dtype = layer.weight.dtype
    weight = weight.to(dtype)
    mask = _mask(layer) & (weight != 0)
    weight = torch.where(mask, weight, torch.zeros((), dtype=dtype))
    has_bias = norm is not None or layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        folded = SparseSpikingConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                     layer.padding, layer.dilation, layer.groups, bias=has_bias,
                                     padding_mode=layer.padding_mode, dtype=dtype)  # fmt: skip
    else:
        folded = SparseLinear(layer.in_features, layer.out_features, bias=has_bias, dtype=dtype)
    folded = folded.to(layer.weight.device)
    folded.weight.copy_(weight)
    if has_bias:
        folded.bias.copy_(bias.to(dtype))
    folded.set_mask(mask.to(layer.weight.device))
    return folded
