"""The tile-resident sparse convolution kernels (csrc/sparse_tiles.h): a block stages all input channels of a
tile of pixels in shared memory once, warps walk output channels' kept weights, one shared-memory load and one
FMA per useful multiply-add. CUDA kernels for speed; on the CPU the same per-thread code runs as an
emulation of the CUDA blocks, for testing the tile logic (the CPU's own fast kernels are elsewhere).

ndsnn.ops.sparse_conv2d runs these on a CUDA device once their tests have passed there (ndsnn._verification)
and the layer's tiles fit the device's shared memory; `sparse_conv2d_tiled` calls them directly (tests,
benchmarks), with `smem_budget` to force small tiles.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .. import _extension
from .kept_index import kept_index

FORWARD = "sparse_conv2d_tiled_forward"
EMULATED_SHARED_BYTES = 48 * 1024


@functools.lru_cache(maxsize=1024)
def tile_plans(x_shape: tuple, weight_shape: tuple, stride: tuple, padding: tuple, dilation: tuple, groups: int,
               element_bytes: int, budget: int) -> tuple[tuple[int, ...], ...]:  # fmt: skip
    """(tile_h, tile_w, images, span_h, span_w, blocks) of the forward, input-gradient and weight-gradient
    kernels; all zeros for a kind whose single pixel does not fit `budget` bytes."""
    plans = torch.ops.ndsnn.sparse_conv2d_tiled_plan(list(x_shape), list(weight_shape), list(stride), list(padding),
                                                     list(dilation), groups, element_bytes, budget)  # fmt: skip
    return tuple(tuple(plans[i : i + 6]) for i in range(0, 18, 6))


def shared_budget(device: torch.device) -> int:
    """The shared memory a block of the tiled kernels may use on `device` (as the CUDA launcher computes it)."""
    if device.type != "cuda":
        return EMULATED_SHARED_BYTES
    optin = getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", 48 * 1024)
    return max(0, int(optin) - 1024)


def tiled_fits(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """Whether every product of this layer has tiles that fit the device's shared memory."""
    plans = tile_plans(tuple(x.shape), tuple(weight.shape), tuple(stride), tuple(padding), tuple(dilation), groups,
                       x.element_size(), shared_budget(x.device))  # fmt: skip
    return all(plan[0] > 0 for plan in plans)


def use_tiled(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> bool:
    """The dispatcher's choice of the tiled kernels over the other sparse kernels: CUDA, verified, fitting."""
    return (
        x.device.type == "cuda"
        and _extension.kernel_ready(FORWARD, x.device)
        and tiled_fits(x, weight, stride, padding, dilation, groups)
    )


def sparse_conv2d_tiled(x, weight, mask, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                        dense_weight_grad: bool = False, smem_budget: int = 0) -> torch.Tensor:  # fmt: skip
    """F.conv2d(x, weight * mask, ...) by the tiled kernels of x's device (CUDA, or the CPU emulation)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if not _extension.has_kernel(FORWARD, x.device.type):
        raise ValueError(f"sparse_conv2d_tiled: {_extension.kernel_unavailable(FORWARD, x.device)}")
    index = kept_index(mask, groups)
    return torch.ops.ndsnn.sparse_conv2d_tiled_forward(
        x, weight, bias, index.out_ptr, index.out_flat, index.in_ptr, index.in_flat,
        list(stride), list(padding), list(dilation), groups, dense_weight_grad, smem_budget,
    )  # fmt: skip


def reference(x, weight, mask, bias=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    return F.conv2d(x, weight * mask, bias, stride, padding, dilation, groups)


def _register() -> None:
    """Fake kernels and autograd for the tiled ops (only when the library is loaded)."""

    @torch.library.register_fake(f"ndsnn::{FORWARD}")
    def _forward_fake(x, weight, bias, out_ptr, out_flat, in_ptr, in_flat, stride, padding, dilation, groups,
                      dense_weight_grad, smem_budget):  # fmt: skip
        out_h = (x.shape[2] + 2 * padding[0] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
        out_w = (x.shape[3] + 2 * padding[1] - dilation[1] * (weight.shape[3] - 1) - 1) // stride[1] + 1
        return x.new_empty((x.shape[0], weight.shape[0], out_h, out_w))

    @torch.library.register_fake("ndsnn::sparse_conv2d_tiled_grad_input")
    def _grad_input_fake(grad_out, weight, in_ptr, in_flat, input_size, stride, padding, dilation, groups,
                         smem_budget):  # fmt: skip
        return grad_out.new_empty(input_size)

    @torch.library.register_fake("ndsnn::sparse_conv2d_tiled_grad_weight")
    def _grad_weight_fake(grad_out, x, out_flat, in_ptr, in_flat, weight_size, stride, padding, dilation, groups,
                          smem_budget):  # fmt: skip
        return x.new_empty(weight_size)

    def setup_context(ctx, inputs, output):
        x, weight, bias, _, out_flat, in_ptr, in_flat, stride, padding, dilation, groups, dense, budget = inputs
        ctx.save_for_backward(x, weight, out_flat, in_ptr, in_flat)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.dense_weight_grad, ctx.budget = dense, budget

    def backward(ctx, grad_out):
        x, weight, out_flat, in_ptr, in_flat = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        needs = ctx.needs_input_grad
        grad_out = grad_out.contiguous()
        grad_x = grad_weight = grad_bias = None
        if needs[0]:
            grad_x = torch.ops.ndsnn.sparse_conv2d_tiled_grad_input(
                grad_out, weight, in_ptr, in_flat, list(x.shape), stride, padding, dilation, groups, ctx.budget
            )
        if needs[1] and ctx.dense_weight_grad:
            grad_weight = torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, stride, padding, dilation, groups)
        elif needs[1]:
            grad_weight = torch.ops.ndsnn.sparse_conv2d_tiled_grad_weight(
                grad_out, x, out_flat, in_ptr, in_flat, list(weight.shape), stride, padding, dilation, groups,
                ctx.budget,
            )  # fmt: skip
        if needs[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return (grad_x, grad_weight, grad_bias) + (None,) * 10

    torch.library.register_autograd(f"ndsnn::{FORWARD}", backward, setup_context=setup_context)


if _extension.load_at_import().loaded:
    _register()
