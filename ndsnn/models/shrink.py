"""A physically smaller copy of a model whose output channels were pruned whole (criticality's structured
variant): the pruned channels are removed from their convolution, its batch norm and the input channels of
the layer that reads them, so the copy computes the same outputs with fewer weights and activations.

A channel is pruned when its row of the weight mask is all False and it is silent (batch-norm scale and shift
zero, as ndsnn.sparse.channels keeps them). Removed: the stem's and every block's channels in the convnet and
VGG-16 (chains), and the inner channels of ResNet-19's basic blocks (a block's output channels meet the
shortcut in a sum, so they stay, masked)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn import SparseLinear, SparseSpikingConv2d
from ..sparse.channels import kept_channels
from .convnet import SpikingConvNet
from .layers import ConvBNLIF, PerFrame
from .resnet import SpikingResNet19
from .vgg import SpikingVGG16


def _conv(conv: SparseSpikingConv2d, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None
          ) -> SparseSpikingConv2d:  # fmt: skip
    """A copy of `conv` with the output channels `rows` and input channels `columns` only."""
    weight, mask = conv.weight.detach(), conv.weight_mask
    if rows is not None:
        weight, mask = weight[rows], mask[rows]
    if columns is not None:
        weight, mask = weight[:, columns], mask[:, columns]
    smaller = SparseSpikingConv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                                  conv.dilation, bias=conv.bias is not None).to(weight.device)  # fmt: skip
    with torch.no_grad():
        smaller.weight.copy_(weight)
        if conv.bias is not None:
            smaller.bias.copy_(conv.bias.detach()[rows] if rows is not None else conv.bias.detach())
    smaller.set_mask(mask.clone())
    return smaller


def _norm(norm: nn.BatchNorm2d, rows: torch.Tensor) -> nn.BatchNorm2d:
    smaller = nn.BatchNorm2d(int(rows.sum()), norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    smaller = smaller.to(norm.weight.device if norm.weight is not None else "cpu")
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            source = getattr(norm, name)
            if source is not None:
                getattr(smaller, name).copy_(source[rows])
        if norm.num_batches_tracked is not None:
            smaller.num_batches_tracked.copy_(norm.num_batches_tracked)
    return smaller


def _linear_inputs(linear: SparseLinear, channels: torch.Tensor) -> SparseLinear:
    """A copy of `linear` reading only the kept channels of a flattened [C, H, W] input."""
    area = linear.in_features // channels.numel()
    columns = channels.repeat_interleave(area)
    smaller = SparseLinear(int(columns.sum()), linear.out_features, bias=linear.bias is not None)
    smaller = smaller.to(linear.weight.device)
    with torch.no_grad():
        smaller.weight.copy_(linear.weight.detach()[:, columns])
        if linear.bias is not None:
            smaller.bias.copy_(linear.bias.detach())
    smaller.set_mask(linear.weight_mask[:, columns].clone())
    return smaller


def _shrink_block(block: ConvBNLIF, columns: torch.Tensor | None) -> torch.Tensor:
    """Shrinks a conv-BN-LIF block in place; returns its kept output channels."""
    rows = kept_channels(block.conv.weight_mask)
    block.conv = _conv(block.conv, rows, columns)
    block.bn = PerFrame(_norm(block.bn.module, rows))
    return rows


def _shrink_stem(model: nn.Module) -> torch.Tensor:
    conv, norm = model.stem[0].module, model.stem[1].module
    rows = kept_channels(conv.weight_mask)
    model.stem[0] = PerFrame(_conv(conv, rows))
    model.stem[1] = PerFrame(_norm(norm, rows))
    return rows


@torch.no_grad()
def shrink(model: nn.Module) -> nn.Module:
    """A copy of `model` without its pruned channels (see the module docstring for which ones)."""
    smaller = copy.deepcopy(model)
    if isinstance(smaller, SpikingConvNet):
        channels = _shrink_stem(smaller)
        channels = _shrink_block(smaller.block, channels)
        smaller.fc1 = _linear_inputs(smaller.fc1, channels)
    elif isinstance(smaller, SpikingVGG16):
        channels = _shrink_stem(smaller)
        for module in smaller.features:
            if isinstance(module, ConvBNLIF):
                channels = _shrink_block(module, channels)
        smaller.classifier = _linear_inputs(smaller.classifier, channels)
    elif isinstance(smaller, SpikingResNet19):
        for block in smaller.stages:
            inner = _shrink_block(block.conv_bn_lif, None)
            block.conv = _conv(block.conv, None, inner)
    else:
        raise TypeError(f"shrink supports the ndsnn.models networks, not {type(model).__name__}")
    return smaller
