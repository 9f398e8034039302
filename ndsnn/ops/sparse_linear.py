"""``ndsnn.ops.sparse_linear``: F.linear(x, weight * mask, bias) in value and gradient, skipping pruned weights.

On the CPU a linear layer has kernels of its own (csrc/cpu/sparse_linear_cpu.cpp): an event-driven forward
over the active inputs for spikes, gathers over the kept weights for real inputs and the input gradient, and
one vectorised dot product per kept weight for its gradient. On CUDA it runs as a 1x1 convolution on the
sparse convolution kernels. Whether the sparse kernels or F.linear serve a call is measured per layer on
this machine (ndsnn.ops.dispatch), as for convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _extension
from . import dispatch
from .compiled import compiled_call
from .crossover import max_sparse_density
from .kept_index import KeptIndex, kept_index
from .masked_args import check_mask_bias_devices, check_tensors
from .sparse_conv2d import (
    _grads_needed,
    _masked_weight,
    _sparse_forward,
    checked_plan,
    kernels_may_run,
    looks_like_spikes,
    plan_sparse,
)
from .sparse_conv2d import backward_products as sparse_conv2d_backward


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
    if torch.compiler.is_compiling():  # one opaque op for the graph (ndsnn.ops.compiled)
        return compiled_call("linear", x, weight, mask, bias, ((1, 1), (0, 0), (1, 1), 1), dense_weight_grad,
                             implementation, spike_input)  # fmt: skip
    return forward(x, weight, mask, bias, dense_weight_grad, implementation, spike_input)


def forward(x, weight, mask, bias, dense_weight_grad: bool, implementation: str, spike_input: bool | None,
            grads: tuple[bool, bool] | None = None) -> torch.Tensor:  # fmt: skip
    """The eager op, arguments checked: the dispatch, then F.linear or the compiled sparse kernels."""
    call = dispatch.eager_call(x, weight, (), implementation, spike_input) if grads is None else None
    if dispatch.known_dense(mask, call):  # planned dense before: the dense op alone
        return F.linear(x, _masked_weight(weight, mask, dense_weight_grad), bias)
    x2 = x.reshape(-1, x.shape[-1])
    if x.device.type == "cpu":
        plan = _plan_cpu(x2, weight, mask, implementation, spike_input, grads=grads)
        if plan is None:
            dispatch.remember_dense(mask, call)
            return F.linear(x, _masked_weight(weight, mask, dense_weight_grad), bias)
        index, spikes = plan
        out = torch.ops.ndsnn.sparse_linear_forward(x2, weight, bias, index.out_ptr, index.out_flat, index.in_ptr,
                                                    index.in_flat, dense_weight_grad, 1 if spikes else 2)  # fmt: skip
        return out.reshape(*x.shape[:-1], weight.shape[0])
    x4 = x2.view(*x2.shape, 1, 1)
    weight4, mask4 = weight.view(*weight.shape, 1, 1), mask.view(*mask.shape, 1, 1)
    geometry = ((1, 1), (0, 0), (1, 1), 1)
    index = plan_sparse(x4, weight4, mask4, bias, geometry, implementation, spike_input, index_mask=mask, grads=grads)
    if index is None:
        dispatch.remember_dense(mask, call)
        return F.linear(x, _masked_weight(weight, mask, dense_weight_grad), bias)
    return _sparse_forward(x4, weight4, bias, index, geometry, dense_weight_grad).reshape(*x.shape[:-1], -1)


def backward_products(grad_out, x, weight, mask, bias, dense_weight_grad: bool, implementation: str,
                      spike_input: bool | None, needs: tuple[bool, bool, bool]) -> list:  # fmt: skip
    """The gradients of x, weight and bias (None where not needed) of sparse_linear's call with these
    arguments, by the path its dispatch takes, without autograd (ndsnn.ops.compiled)."""
    needs_x, needs_w, needs_b = needs
    x2, g2 = x.reshape(-1, x.shape[-1]), grad_out.reshape(-1, weight.shape[0])
    grad_b = g2.sum(0) if needs_b else None
    if x.device.type != "cpu":  # a 1x1 convolution
        x4, g4 = x2.view(*x2.shape, 1, 1), g2.view(*g2.shape, 1, 1)
        grads = sparse_conv2d_backward(g4, x4, weight.view(*weight.shape, 1, 1), mask.view(*mask.shape, 1, 1), bias,
                                       ((1, 1), (0, 0), (1, 1), 1), dense_weight_grad, implementation, spike_input,
                                       needs)  # fmt: skip
        grad_x = grads[0].reshape(x.shape) if grads[0] is not None else None
        grad_w = grads[1].reshape(weight.shape) if grads[1] is not None else None
        return [grad_x, grad_w, grad_b]
    plan = _plan_cpu(x2, weight, mask, implementation, spike_input, grads=(needs_x, needs_w))
    grad_x = grad_w = None
    if plan is None:
        masked = weight * mask
        grad_x = g2.mm(masked).reshape(x.shape) if needs_x else None
        grad_w = g2.t().mm(x2) if needs_w else None
        if grad_w is not None and not dense_weight_grad:
            grad_w = grad_w * mask
        return [grad_x, grad_w, grad_b]
    index, _ = plan
    if needs_x:
        grad_x = torch.ops.ndsnn.sparse_linear_grad_input(g2, weight, index.in_ptr, index.in_flat).reshape(x.shape)
    if needs_w:
        grad_w = g2.t().mm(x2) if dense_weight_grad else torch.ops.ndsnn.sparse_linear_grad_weight(
            g2, x2, index.out_flat, list(weight.shape))  # fmt: skip
    return [grad_x, grad_w, grad_b]


def _plan_cpu(x2: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, implementation: str,
              spike_input: bool | None, grads: tuple[bool, bool] | None = None
              ) -> tuple[KeptIndex, bool] | None:  # fmt: skip
    """(kept-weight index, spike input?) when the CPU sparse linear kernels should run, None for F.linear."""
    if not kernels_may_run("sparse_linear_forward", x2.device, implementation):
        return None
    spikes = spike_input if spike_input is not None else looks_like_spikes(x2)
    if implementation == "sparse":
        return kept_index(mask, 1), spikes
    grads = grads if grads is not None else _grads_needed(x2, weight)

    def sparse_wins(kept: int) -> bool:
        density = kept / max(1, mask.numel())
        bucket = dispatch.density_bucket(density)
        call = dispatch.LayerCall("linear", dispatch.device_name(x2.device), str(x2.dtype), tuple(x2.shape),
                                  tuple(weight.shape), (), tuple(grads), spikes, bucket)  # fmt: skip

        def prior() -> bool:  # the conv table, read as a 1x1 convolution
            return density <= max_sparse_density(x2.device, (*x2.shape, 1, 1), (*weight.shape, 1, 1), (1, 1), spikes)

        def timers() -> dispatch.Timers:
            if any(grads) and dispatch.autograd_usable():

                def run(x_leaf: torch.Tensor, w_leaf: torch.Tensor, path: str) -> torch.Tensor:
                    return forward(x_leaf, w_leaf, mask, None, False, path, spikes)

                return dispatch.autograd_steps(run, dispatch.synthetic_input(x2.detach(), spikes), weight, grads)
            return _timed_steps(x2, weight, mask, kept_index(mask, 1), spikes, grads)

        return dispatch.decide(call, timers, prior, x2.device)

    index = checked_plan(mask, 1, sparse_wins)
    return (index, spikes) if index is not None else None


def _timed_steps(x2: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, index: KeptIndex, spikes: bool,
                 grads: tuple[bool, bool]) -> dispatch.Timers:  # fmt: skip
    """One forward and the backward products the call needs, by the sparse kernels and by F.linear, on
    synthetic data of x's shape and kind."""
    x_syn = dispatch.synthetic_input(x2.detach(), spikes)
    w = weight.detach()
    needs_x, needs_w = grads

    def sparse() -> None:
        out = torch.ops.ndsnn.sparse_linear_forward(x_syn, w, None, index.out_ptr, index.out_flat, index.in_ptr,
                                                    index.in_flat, False, 1 if spikes else 2)  # fmt: skip
        if needs_x:
            torch.ops.ndsnn.sparse_linear_grad_input(out, w, index.in_ptr, index.in_flat)
        if needs_w:
            torch.ops.ndsnn.sparse_linear_grad_weight(out, x_syn, index.out_flat, list(w.shape))

    def dense() -> None:
        masked = w * mask
        out = F.linear(x_syn, masked)
        if needs_x:
            out.mm(masked)
        if needs_w:
            torch.mul(out.t().mm(x_syn), mask)

    return sparse, dense


def _register() -> None:
    """Fake kernels and autograd for the CPU sparse linear ops (only when the library is loaded)."""

    @torch.library.register_fake("ndsnn::sparse_linear_forward")
    def _forward_fake(x, weight, bias, out_ptr, out_flat, in_ptr, in_flat, dense_weight_grad, input_kind):
        return x.new_empty((x.shape[0], weight.shape[0]))

    @torch.library.register_fake("ndsnn::sparse_linear_grad_input")
    def _grad_input_fake(grad_out, weight, in_ptr, in_flat):
        return grad_out.new_empty((grad_out.shape[0], weight.shape[1]))

    @torch.library.register_fake("ndsnn::sparse_linear_grad_weight")
    def _grad_weight_fake(grad_out, x, out_flat, weight_size):
        return x.new_empty(weight_size)

    def setup_context(ctx, inputs, output):
        x, weight, _, _, out_flat, in_ptr, in_flat, dense, _ = inputs
        ctx.save_for_backward(x, weight, out_flat, in_ptr, in_flat)
        ctx.dense_weight_grad = dense

    def backward(ctx, grad_out):
        x, weight, out_flat, in_ptr, in_flat = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_out = grad_out.contiguous()
        grad_x = grad_weight = grad_bias = None
        if needs[0]:
            grad_x = torch.ops.ndsnn.sparse_linear_grad_input(grad_out, weight, in_ptr, in_flat)
        if needs[1] and ctx.dense_weight_grad:
            grad_weight = grad_out.t().mm(x)
        elif needs[1]:
            grad_weight = torch.ops.ndsnn.sparse_linear_grad_weight(grad_out, x, out_flat, list(weight.shape))
        if needs[2]:
            grad_bias = grad_out.sum(0)
        return (grad_x, grad_weight, grad_bias) + (None,) * 6

    torch.library.register_autograd("ndsnn::sparse_linear_forward", backward, setup_context=setup_context)


if _extension.load_at_import().loaded:
    _register()
