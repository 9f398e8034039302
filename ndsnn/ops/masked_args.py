"""Argument checks shared by the masked ops (sparse_conv2d, sparse_linear): one wording for one mistake."""

from __future__ import annotations

import torch


def check_tensors(**tensors: object) -> None:
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def check_mask_bias_devices(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """mask: bool of weight's shape; bias: [out] of x's dtype; all on x's device."""
    if mask.dtype != torch.bool or mask.shape != weight.shape:
        raise ValueError(
            f"mask must be a bool tensor of weight's shape {tuple(weight.shape)}, got {mask.dtype} of shape "
            f"{tuple(mask.shape)}"
        )
    for name, value in (("weight", weight), ("mask", mask), ("bias", bias)):
        if value is not None and value.device != x.device:
            raise ValueError(f"{name} is on {value.device} but x is on {x.device}; put all on one device")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != x.dtype):
        raise ValueError(f"bias must be a [{weight.shape[0]}] tensor of dtype {x.dtype}, got {tuple(bias.shape)}")
