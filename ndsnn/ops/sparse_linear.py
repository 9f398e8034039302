"""``ndsnn.ops.sparse_linear``: F.linear(x, weight * mask, bias) in value and gradient, skipping pruned weights.

A linear layer is a 1x1 convolution over a [batch, in_features, 1, 1] input, so its sparse path runs on the
sparse convolution kernels (the kept-weight index, the event-driven path for spike inputs) with no kernel of
its own: on the CPU the batch becomes the innermost, contiguous dimension. The dense path is F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masked_args import check_mask_bias_devices, check_tensors
from .sparse_conv2d import _masked_weight, plan_sparse
from .sparse_conv2d_tiled import use_tiled


def sparse_linear_reference(x, weight, mask, bias=None):
    """The definition: a dense linear layer with the pruned weights zeroed."""
    return F.linear(x, weight * mask, bias)


def _check_args(x, weight, mask, bias) -> None:
    check_tensors(x=x, weight=weight, mask=mask)
    if weight.dim() != 2:
        raise ValueError(f"weight must be an [out_features, in_features] tensor, got shape {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1] or not x.is_floating_point():
        raise ValueError(
            f"x must be a floating-point tensor of shape [..., {weight.shape[1]}] (in_features), got {x.dtype} "
            f"of shape {tuple(x.shape)}"
        )
    if weight.dtype != x.dtype:
        raise ValueError(f"weight must have x's dtype {x.dtype}, got {weight.dtype}")
    check_mask_bias_devices(x, weight, mask, bias)


def sparse_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    dense_weight_grad: bool = False,
    implementation: str = "auto",
    spike_input: bool | None = None,
) -> torch.Tensor:
    """F.linear(x, weight * mask, bias) for x [..., in_features]; options as in ndsnn.ops.sparse_conv2d."""
    _check_args(x, weight, mask, bias)
    x4 = x.reshape(-1, x.shape[-1], 1, 1)
    weight4, mask4 = weight.view(*weight.shape, 1, 1), mask.view(*mask.shape, 1, 1)
    index = plan_sparse(x4, weight4, mask4, (1, 1), 1, implementation, spike_input, index_mask=mask)
    if index is None:
        return F.linear(x, _masked_weight(weight, mask, dense_weight_grad), bias)
    args = (x4, weight4, bias, index.out_ptr, index.out_flat, index.in_ptr, index.in_flat, [1, 1], [0, 0], [1, 1], 1,
            dense_weight_grad)  # fmt: skip
    if use_tiled(x4, weight4, (1, 1), (0, 0), (1, 1), 1):  # CUDA: the tile-resident kernels
        out = torch.ops.ndsnn.sparse_conv2d_tiled_forward(*args, 0)
    else:
        out = torch.ops.ndsnn.sparse_conv2d_forward(*args)
    return out.reshape(*x.shape[:-1], weight.shape[0])
