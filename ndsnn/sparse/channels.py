"""Whole output channels as the unit of pruning: channel masks of a layer's weight, the batch norm that
normalises a layer's channels, and keeping a pruned channel silent.

A channel is pruned when its row of the weight mask (output channel or output neuron) is all False. To make
it silent, which is what a physically smaller network computes, its batch-norm scale and shift are zero too:
then its normalised output is exactly 0 in training and evaluation, and its neurons never fire."""

from __future__ import annotations

import torch
from torch import nn

from ..nn.masking import weight_state


def kept_channels(mask: torch.Tensor) -> torch.Tensor:
    """Bool [out]: the output channels with at least one kept weight."""
    return mask.flatten(1).any(1)


def channel_mask(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The weight mask that keeps whole output channels `rows` (bool [out])."""
    return rows.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight).clone()


@torch.no_grad()
def silence_channels(norm: nn.modules.batchnorm._BatchNorm, pruned: torch.Tensor,
                     optimizer: torch.optim.Optimizer | None) -> None:  # fmt: skip
    """Zero the scale and shift (and their optimizer state) of the pruned channels of a batch norm."""
    for parameter in (norm.weight, norm.bias):
        if parameter is None:
            continue
        parameter[pruned] = 0.0
        for value in weight_state(optimizer, parameter) if optimizer is not None else []:
            value[pruned] = 0.0


@torch.no_grad()
def restart_channels(norm: nn.modules.batchnorm._BatchNorm, channels: torch.Tensor,
                     optimizer: torch.optim.Optimizer | None) -> None:  # fmt: skip
    """A regenerated channel's batch norm starts as a new one: scale 1, shift 0, statistics 0 / 1."""
    if norm.weight is not None:
        norm.weight[channels] = 1.0
    if norm.bias is not None:
        norm.bias[channels] = 0.0
    if norm.running_mean is not None:
        norm.running_mean[channels] = 0.0
        norm.running_var[channels] = 1.0
    for parameter in (norm.weight, norm.bias):
        if parameter is not None and optimizer is not None:
            for value in weight_state(optimizer, parameter):
                value[channels] = 0.0
