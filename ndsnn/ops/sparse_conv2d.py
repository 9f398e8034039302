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
from . import dispatch
from .compiled import compiled_call
from .crossover import max_sparse_density
from .kept_index import KeptIndex, kept_count, kept_index
from .masked_args import check_mask_bias_devices, check_tensors
from .nonzero import nonzero_count
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
# Inputs with at most this fraction of nonzeros count as spikes (the CPU kernels' event-driven path).
SPIKE_INPUT_MAX_DENSITY = 0.3
# Inputs larger than this many elements are judged on a strided sample of about this many.
SPIKE_CHECK_SAMPLE = 1 << 16


def looks_like_spikes(x: torch.Tensor) -> bool:
    """Whether x has few enough nonzeros to be spikes: the dispatch's key, not the kernel's path (the CPU
    kernel counts x exactly, in parallel, before it picks its event-driven path). Layers that know their
    input kind say it with spike_input instead. A contiguous x of more than SPIKE_CHECK_SAMPLE elements is
    judged on an odd-strided sample of about that many (0.05 ms instead of 0.4-0.9 for a full count of a
    million elements, a fifth of the headline layer's sparse forward); a misjudged x near the boundary only
    looks up the timings of the other input kind. The count is ndsnn.ops.nonzero.nonzero_count."""
    values = x
    if x.is_contiguous() and x.numel() > SPIKE_CHECK_SAMPLE:
        step = (x.numel() // SPIKE_CHECK_SAMPLE) | 1  # odd: no lock-step with even plane and channel sizes
        values = x.view(-1)[::step]
    return int(nonzero_count(values)) <= SPIKE_INPUT_MAX_DENSITY * values.numel()


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
) -> torch.Tensor:
    """F.conv2d(x, weight * mask, bias, stride, padding, dilation, groups), skipping pruned weights.

    The weight gradient is zero at pruned positions unless dense_weight_grad (what a grow step needs).
    implementation: "sparse" (the compiled kernels; ValueError where there are none for x's device, or they
    have not passed their tests there), "dense" (cuDNN / mkldnn on weight * mask), or "auto": whichever
    measured faster for this layer on this machine (ndsnn.ops.dispatch). spike_input says whether x is spikes
    (mostly zeros) or real-valued, which changes the sparse kernels' speed; None: counted from x when needed.
    """
    _check_args(x, weight, mask, bias, groups)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    geometry = (stride, padding, dilation, groups)
    if torch.compiler.is_compiling():  # one opaque op for the graph; its body is this function, run eagerly
        return compiled_call("conv2d", x, weight, mask, bias, geometry, dense_weight_grad, implementation,
                             spike_input)  # fmt: skip
    return forward(x, weight, mask, bias, geometry, dense_weight_grad, implementation, spike_input)


def forward(x, weight, mask, bias, geometry, dense_weight_grad: bool, implementation: str, spike_input: bool | None,
            grads: tuple[bool, bool] | None = None) -> torch.Tensor:  # fmt: skip
    """The eager op, arguments checked: the dispatch, then the dense op or the compiled sparse kernels."""
    call = dispatch.eager_call(x, weight, geometry, implementation, spike_input) if grads is None else None
    index = None if dispatch.known_dense(mask, call) else plan_sparse(x, weight, mask, bias, geometry, implementation,
                                                                      spike_input, grads=grads)  # fmt: skip
    if index is None:
        dispatch.remember_dense(mask, call)
        return F.conv2d(x, _masked_weight(weight, mask, dense_weight_grad), bias, *geometry)
    return _sparse_forward(x, weight, bias, index, geometry, dense_weight_grad)


def _sparse_forward(x, weight, bias, index: KeptIndex, geometry, dense_weight_grad: bool) -> torch.Tensor:
    """The compiled sparse kernels (autograd included): on CUDA the tile-resident ones where they may run."""
    stride, padding, dilation, groups = geometry
    args = (x, weight, bias, index.out_ptr, index.out_flat, index.in_ptr, index.in_flat, list(stride), list(padding),
            list(dilation), groups, dense_weight_grad)  # fmt: skip
    if use_tiled(x, weight, stride, padding, dilation, groups):
        return torch.ops.ndsnn.sparse_conv2d_tiled_forward(*args, 0)
    return torch.ops.ndsnn.sparse_conv2d_forward(*args)


def kernels_may_run(op: str, device: torch.device, implementation: str) -> bool:
    """Whether the compiled sparse kernels (of which `op` is the forward) are a choice for this call: False for
    "dense" or where they cannot run; ValueError for an unknown implementation, or "sparse" where they cannot."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}; got {implementation!r}")
    if implementation == "dense":
        return False
    if not _extension.use_kernel(op, device):
        if implementation == "sparse":
            raise ValueError(f"implementation='sparse': {_extension.kernel_unavailable(op, device)}")
        return False
    return True


def plan_sparse(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple,
    implementation: str,
    spike_input: bool | None,
    index_mask: torch.Tensor | None = None,
    grads: tuple[bool, bool] | None = None,
) -> KeptIndex | None:
    """The kept-weight index when the compiled sparse kernels should run, None for the dense path. index_mask:
    the tensor the index is cached on, when mask is a view made per call (a linear layer's 1x1 view); grads:
    (input, weight) gradients the call will need, where x and weight do not say it (inside an opaque op)."""
    if not kernels_may_run("sparse_conv2d_forward", x.device, implementation):
        return None
    cached_on = mask if index_mask is None else index_mask
    if implementation == "sparse":
        return kept_index(cached_on, geometry[3])
    spikes = spike_input if spike_input is not None else looks_like_spikes(x)
    grads = grads if grads is not None else _grads_needed(x, weight)

    def sparse_wins(kept: int) -> bool:
        density = kept / max(1, mask.numel())
        call = dispatch.LayerCall("conv2d", dispatch.device_name(x.device), str(x.dtype), tuple(x.shape),
                                  tuple(weight.shape), _plain(geometry), tuple(grads), spikes,
                                  dispatch.density_bucket(density))  # fmt: skip

        def prior() -> bool:
            return density <= max_sparse_density(x.device, x.shape, weight.shape, geometry[0], spikes)

        def timers() -> dispatch.Timers:
            if any(grads) and dispatch.autograd_usable():

                def run(x_leaf: torch.Tensor, w_leaf: torch.Tensor, path: str) -> torch.Tensor:
                    return forward(x_leaf, w_leaf, mask, None, geometry, False, path, spikes)

                return dispatch.autograd_steps(run, dispatch.synthetic_input(x.detach(), spikes), weight, grads)
            index = kept_index(cached_on, geometry[3])
            return _timed_steps(x, weight, mask, index, geometry, spikes, grads)

        return dispatch.decide(call, timers, prior, x.device)

    return checked_plan(cached_on, geometry[3], sparse_wins)


def checked_plan(mask: torch.Tensor, groups: int, sparse_wins) -> KeptIndex | None:
    """The dispatch on the mask's cached kept count (no pass over the mask where dense serves), then the index
    the kernels read, checked against the mask's values; decided again should the two counts disagree (a
    change the mask's version counter did not see)."""
    kept = kept_count(mask)
    if not sparse_wins(kept):
        return None
    index = kept_index(mask, groups)
    if index.kept != kept and not sparse_wins(index.kept):
        return None
    return index


def _plain(geometry: tuple) -> tuple:
    stride, padding, dilation, groups = geometry
    return (tuple(stride), tuple(padding), tuple(dilation), groups)


def _grads_needed(x: torch.Tensor, weight: torch.Tensor) -> tuple[bool, bool]:
    grad = torch.is_grad_enabled()
    return grad and x.requires_grad, grad and weight.requires_grad


def _timed_steps(x, weight, mask, index: KeptIndex, geometry, spikes: bool, grads: tuple[bool, bool]
                 ) -> dispatch.Timers:  # fmt: skip
    """One forward (and the backward products the call will need) of the layer by the sparse kernels and by
    the dense op, on synthetic data of x's shape and kind, for dispatch.decide to time where autograd cannot
    run (inside a compiled op's body)."""
    conv = [list(v) if isinstance(v, tuple) else v for v in geometry]
    stride, padding, dilation, groups = conv
    needs_x, needs_w = grads
    x_syn = dispatch.synthetic_input(x.detach(), spikes)
    w = weight.detach()

    def sparse() -> None:
        ops = torch.ops.ndsnn
        out = ops.sparse_conv2d_forward(x_syn, w, None, *_index_args(index), *conv, False)
        if needs_x:
            ops.sparse_conv2d_grad_input(out, w, index.in_ptr, index.in_flat, list(x.shape), *conv)
        if needs_w:
            ops.sparse_conv2d_grad_weight(out, x_syn, index.out_flat, index.in_ptr, index.in_flat, list(w.shape), *conv)

    def dense() -> None:
        masked = w * mask
        out = F.conv2d(x_syn, masked, None, stride, padding, dilation, groups)
        if needs_x or needs_w:
            torch.ops.aten.convolution_backward(out, x_syn, masked, None, stride, padding, dilation, False, [0, 0],
                                                groups, [needs_x, needs_w, False])  # fmt: skip
            if needs_w:
                torch.mul(masked, mask)  # the weight gradient masked, as autograd does for weight * mask

    if use_tiled(x, weight, geometry[0], geometry[1], geometry[2], geometry[3]):
        return _tiled_steps(x_syn, w, index, geometry, needs_x, needs_w), dense
    return sparse, dense


def _tiled_steps(x_syn, w, index: KeptIndex, geometry, needs_x: bool, needs_w: bool):
    conv = [list(v) if isinstance(v, tuple) else v for v in geometry]

    def tiled() -> None:
        ops = torch.ops.ndsnn
        out = ops.sparse_conv2d_tiled_forward(x_syn, w, None, *_index_args(index), *conv, False, 0)
        if needs_x:
            ops.sparse_conv2d_tiled_grad_input(out, w, index.in_ptr, index.in_flat, list(x_syn.shape), *conv, 0)
        if needs_w:
            ops.sparse_conv2d_tiled_grad_weight(out, x_syn, *_index_args(index)[1:], list(w.shape), *conv, 0)

    return tiled


def _index_args(index: KeptIndex) -> tuple[torch.Tensor, ...]:
    return index.out_ptr, index.out_flat, index.in_ptr, index.in_flat


def backward_products(grad_out, x, weight, mask, bias, geometry, dense_weight_grad: bool, implementation: str,
                      spike_input: bool | None, needs: tuple[bool, bool, bool]) -> list:  # fmt: skip
    """The gradients of x, weight and bias (None where not needed) of sparse_conv2d's call with these
    arguments, by the path its dispatch takes: what autograd computes, without autograd (ndsnn.ops.compiled)."""
    needs_x, needs_w, needs_b = needs
    stride, padding, dilation, groups = geometry
    conv = [list(stride), list(padding), list(dilation), groups]
    index = plan_sparse(x, weight, mask, bias, geometry, implementation, spike_input, grads=(needs_x, needs_w))
    grad_b = grad_out.sum((0, 2, 3)) if needs_b else None
    if index is None:  # the dense op on weight * mask
        masked = weight * mask
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(grad_out, x, masked, None, *conv[:3], False, [0, 0],
                                                                groups, [needs_x, needs_w, False])  # fmt: skip
        if grad_w is not None and not dense_weight_grad:
            grad_w = grad_w * mask
        return [grad_x, grad_w, grad_b]
    tiled = use_tiled(x, weight, *geometry)
    ops, extra = torch.ops.ndsnn, [0] if tiled else []
    grad_x = grad_w = None
    if needs_x:
        grad_input = ops.sparse_conv2d_tiled_grad_input if tiled else ops.sparse_conv2d_grad_input
        grad_x = grad_input(grad_out, weight, index.in_ptr, index.in_flat, list(x.shape), *conv, *extra)
    if needs_w and dense_weight_grad:
        grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad_out, stride, padding, dilation, groups)
    elif needs_w:
        grad_weight = ops.sparse_conv2d_tiled_grad_weight if tiled else ops.sparse_conv2d_grad_weight
        grad_w = grad_weight(grad_out, x, *_index_args(index)[1:], list(weight.shape), *conv, *extra)
    return [grad_x, grad_w, grad_b]


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
