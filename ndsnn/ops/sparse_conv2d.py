"""``ndsnn.ops.sparse_conv2d``: a 2-D convolution with a pruning mask, F.conv2d(x, weight * mask, ...) in
value and gradient, computed with work proportional to the kept weights where a compiled kernel exists.

The mask enters the kernels as a kept-weight index (flat positions grouped by output and by input channel),
cached on the mask and rebuilt whenever the mask's values change, however they were changed
(ndsnn.ops.kept_index). The weight gradient is returned at kept positions only (zero elsewhere), unless
``dense_weight_grad=True``: the step before a grow, when a sparsity method needs the gradient of pruned
weights too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .. import _extension
from .crossover import max_sparse_density
from .kept_index import KeptIndex, kept_index
from .masked_args import check_mask_bias_devices, check_tensors
from .sparse_conv2d_tiled import use_tiled


def sparse_conv2d_reference(x, weight, mask, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """The definition: a dense convolution with the pruned weights zeroed."""
    return F.conv2d(x, weight * mask, bias, stride, padding, dilation, groups)


def _check_args(x, weight, mask, bias, groups) -> None:
    check_tensors(x=x, weight=weight, mask=mask)
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point [N, C, H, W] tensor, got {x.dtype} of shape {tuple(x.shape)}")
    if weight.dim() != 4 or weight.dtype != x.dtype:
        raise ValueError(
            f"weight must be a [C_out, C_in / groups, KH, KW] tensor of x's dtype {x.dtype}, got {weight.dtype} "
            f"of shape {tuple(weight.shape)}"
        )
    check_mask_bias_devices(x, weight, mask, bias)
    if not isinstance(groups, int) or groups < 1 or x.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"x has {x.shape[1]} channels but weight expects C_in / groups = {weight.shape[1]} with groups={groups}"
        )
    if weight.shape[0] % groups:
        raise ValueError(f"weight's C_out = {weight.shape[0]} is not divisible by groups = {groups}")


IMPLEMENTATIONS = ("auto", "sparse", "dense")
# Inputs with at most this fraction of nonzeros count as spikes (the CPU kernel's event-driven path).
SPIKE_INPUT_MAX_DENSITY = 0.3


def _crossovers(x, weight, stride, spike_input) -> tuple[float, float]:
    """The densest masks for which the sparse kernel wins here: (as spikes, as real input), one of them
    for an input kind the caller named."""
    if spike_input is not None:
        value = max_sparse_density(x.device, x.shape, weight.shape, stride, spike_input)
        return (value, 0.0) if spike_input else (0.0, value)
    as_spikes = max_sparse_density(x.device, x.shape, weight.shape, stride, True)
    return as_spikes, max_sparse_density(x.device, x.shape, weight.shape, stride, False)


def _choose_sparse(x, density, spike_input, as_spikes: float, as_real: float) -> bool:
    """auto: the sparse kernel when the mask is no denser than the measured crossover for this layer."""
    if spike_input is not None:
        return density <= (as_spikes if spike_input else as_real)
    if density <= min(as_spikes, as_real):
        return True
    if density > max(as_spikes, as_real):
        return False
    looks_like_spikes = torch.count_nonzero(x).item() <= SPIKE_INPUT_MAX_DENSITY * x.numel()
    return density <= (as_spikes if looks_like_spikes else as_real)


def sparse_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    dense_weight_grad: bool = False,
    implementation: str = "auto",
    spike_input: bool | None = None,
    index_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """F.conv2d(x, weight * mask, bias, stride, padding, dilation, groups), skipping pruned weights.

    The weight gradient is zero at pruned positions unless dense_weight_grad (what a grow step needs).
    implementation: "sparse" (the compiled kernel; ValueError where there is none for x's device, or it
    has not passed its tests there), "dense" (cuDNN / mkldnn on weight * mask), or "auto":
    sparse when the mask is no denser than the crossover measured for this device kind and layer shape
    (ndsnn.ops.crossover). spike_input says whether x is mostly zeros (spikes) or real-valued, which moves
    the crossover; None: looked up from x when it matters. index_mask: the tensor the kept-weight index is
    cached on, when mask is a view made per call (sparse_linear's 1x1 view of its 2-D mask).
    """
    _check_args(x, weight, mask, bias, groups)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    index = plan_sparse(x, weight, mask, stride, groups, implementation, spike_input, index_mask)
    if index is None:
        return F.conv2d(x, _masked_weight(weight, mask, dense_weight_grad), bias, stride, padding, dilation, groups)
    args = (x, weight, bias, index.out_ptr, index.out_flat, index.in_ptr, index.in_flat, list(stride), list(padding),
            list(dilation), groups, dense_weight_grad)  # fmt: skip
    if use_tiled(x, weight, stride, padding, dilation, groups):  # CUDA: the tile-resident kernels
        return torch.ops.ndsnn.sparse_conv2d_tiled_forward(*args, 0)
    return torch.ops.ndsnn.sparse_conv2d_forward(*args)


def plan_sparse(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    stride: tuple[int, int],
    groups: int,
    implementation: str,
    spike_input: bool | None,
    index_mask: torch.Tensor | None = None,
) -> KeptIndex | None:
    """The kept-weight index when the compiled sparse kernel should run, None for the dense path."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}; got {implementation!r}")
    if implementation == "dense":
        return None
    if not _extension.use_kernel("sparse_conv2d_forward", x.device):
        if implementation == "sparse":
            raise ValueError(
                f"implementation='sparse': {_extension.kernel_unavailable('sparse_conv2d_forward', x.device)}"
            )
        return None
    if implementation == "auto":
        as_spikes, as_real = _crossovers(x, weight, stride, spike_input)
        if max(as_spikes, as_real) <= 0.0:  # the kernel never wins here: no index needed
            return None
    index = kept_index(mask if index_mask is None else index_mask, groups)
    density = index.kept / max(1, mask.numel())
    if implementation == "auto" and not _choose_sparse(x, density, spike_input, as_spikes, as_real):
        return None
    return index


def _masked_weight(weight: torch.Tensor, mask: torch.Tensor, dense_weight_grad: bool) -> torch.Tensor:
    """weight * mask; with dense_weight_grad its gradient reaches pruned positions too (value unchanged)."""
    masked = weight * mask
    if dense_weight_grad:
        masked = masked + (weight - weight.detach()) * ~mask
    return masked


def _register() -> None:
    """Fake kernels and autograd for the compiled ops (only when the library is loaded)."""

    @torch.library.register_fake("ndsnn::sparse_conv2d_forward")
    def _forward_fake(x, weight, bias, out_ptr, out_flat, in_ptr, in_flat, stride, padding, dilation, groups,
                      dense_weight_grad):  # fmt: skip
        out_h = (x.shape[2] + 2 * padding[0] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
        out_w = (x.shape[3] + 2 * padding[1] - dilation[1] * (weight.shape[3] - 1) - 1) // stride[1] + 1
        return x.new_empty((x.shape[0], weight.shape[0], out_h, out_w))

    @torch.library.register_fake("ndsnn::sparse_conv2d_grad_input")
    def _grad_input_fake(grad_out, weight, in_ptr, in_flat, input_size, stride, padding, dilation, groups):
        return grad_out.new_empty(input_size)

    @torch.library.register_fake("ndsnn::sparse_conv2d_grad_weight")
    def _grad_weight_fake(grad_out, x, out_flat, in_ptr, in_flat, weight_size, stride, padding, dilation, groups):
        return x.new_empty(weight_size)

    def setup_context(ctx, inputs, output):
        x, weight, bias, _, out_flat, in_ptr, in_flat, stride, padding, dilation, groups, dense = inputs
        ctx.save_for_backward(x, weight, out_flat, in_ptr, in_flat)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.dense_weight_grad = dense

    def backward(ctx, grad_out):
        x, weight, out_flat, in_ptr, in_flat = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        needs = ctx.needs_input_grad
        grad_out = grad_out.contiguous()
        grad_x = grad_weight = grad_bias = None
        if needs[0]:
            grad_x = torch.ops.ndsnn.sparse_conv2d_grad_input(
                grad_out, weight, in_ptr, in_flat, list(x.shape), stride, padding, dilation, groups
            )
        if needs[1] and ctx.dense_weight_grad:
            grad_weight = torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, stride, padding, dilation, groups)
        elif needs[1]:
            grad_weight = torch.ops.ndsnn.sparse_conv2d_grad_weight(
                grad_out, x, out_flat, in_ptr, in_flat, list(weight.shape), stride, padding, dilation, groups
            )
        if needs[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return (grad_x, grad_weight, grad_bias) + (None,) * 9

    torch.library.register_autograd("ndsnn::sparse_conv2d_forward", backward, setup_context=setup_context)


if _extension.load_at_import().loaded:
    _register()
