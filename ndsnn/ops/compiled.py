"""The sparse layers under torch.compile: each call is one opaque op in the graph, whose body is the eager op
(the kept-weight index, the measured dispatch, the compiled kernels or the dense op, all decided at run time,
exactly as in eager mode). So a model with sparse layers compiles with fullgraph=True and computes what it
computes eagerly. Its backward is another opaque op that computes the same gradients by the same path
(ndsnn.ops.sparse_conv2d / sparse_linear's backward_products); the gradients a call will need are told to
the forward, so that its dispatch sees the same layer call as the eager op's."""

from __future__ import annotations

import importlib

import torch


def _op_modules():
    """The op modules (not the functions of the same names that ndsnn.ops exports); imported late: they import
    this module."""
    return importlib.import_module(f"{__package__}.sparse_conv2d"), importlib.import_module(
        f"{__package__}.sparse_linear"
    )


def _eager(kind: str, x, weight, mask, bias, stride, padding, dilation, groups, dense_weight_grad, implementation,
           spike_input, grads=None):  # fmt: skip
    """The eager op's forward; grads: the (input, weight) gradients the call will need, for its dispatch."""
    sparse_conv2d, sparse_linear = _op_modules()
    spikes = None if spike_input < 0 else bool(spike_input)
    geometry = (tuple(stride), tuple(padding), tuple(dilation), groups)
    if kind == "linear":
        return sparse_linear.forward(x, weight, mask, bias, dense_weight_grad, implementation, spikes, grads)
    return sparse_conv2d.forward(x, weight, mask, bias, geometry, dense_weight_grad, implementation, spikes, grads)


@torch.library.custom_op("ndsnn::masked_layer", mutates_args=())
def masked_layer(kind: str, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
                 stride: list[int], padding: list[int], dilation: list[int], groups: int, dense_weight_grad: bool,
                 implementation: str, spike_input: int, grads: list[bool]) -> torch.Tensor:  # fmt: skip
    return _eager(kind, x, weight, mask, bias, stride, padding, dilation, groups, dense_weight_grad, implementation,
                  spike_input, grads).clone()  # fmt: skip


@masked_layer.register_fake
def _masked_layer_fake(kind, x, weight, mask, bias, stride, padding, dilation, groups, dense_weight_grad,
                       implementation, spike_input, grads):  # fmt: skip
    if kind == "linear":
        return x.new_empty((*x.shape[:-1], weight.shape[0]))
    out_h = (x.shape[2] + 2 * padding[0] - dilation[0] * (weight.shape[2] - 1) - 1) // stride[0] + 1
    out_w = (x.shape[3] + 2 * padding[1] - dilation[1] * (weight.shape[3] - 1) - 1) // stride[1] + 1
    return x.new_empty((x.shape[0], weight.shape[0], out_h, out_w))


@torch.library.custom_op("ndsnn::masked_layer_backward", mutates_args=())
def masked_layer_backward(grad_out: torch.Tensor, kind: str, x: torch.Tensor, weight: torch.Tensor,
                          mask: torch.Tensor, bias: torch.Tensor | None, stride: list[int], padding: list[int],
                          dilation: list[int], groups: int, dense_weight_grad: bool, implementation: str,
                          spike_input: int, needs: list[bool]) -> list[torch.Tensor]:  # fmt: skip
    sparse_conv2d, sparse_linear = _op_modules()
    spikes = None if spike_input < 0 else bool(spike_input)
    if kind == "linear":
        grads = sparse_linear.backward_products(grad_out, x, weight, mask, bias, dense_weight_grad, implementation,
                                                spikes, tuple(needs))  # fmt: skip
    else:
        geometry = (tuple(stride), tuple(padding), tuple(dilation), groups)
        grads = sparse_conv2d.backward_products(grad_out, x, weight, mask, bias, geometry, dense_weight_grad,
                                                implementation, spikes, tuple(needs))  # fmt: skip
    return [g.contiguous() if g is not None else x.new_empty(0) for g in grads]


@masked_layer_backward.register_fake
def _masked_layer_backward_fake(grad_out, kind, x, weight, mask, bias, stride, padding, dilation, groups,
                                dense_weight_grad, implementation, spike_input, needs):  # fmt: skip
    shapes = (x, weight, bias)
    return [t.new_empty(t.shape) if need and t is not None else x.new_empty(0)
            for t, need in zip(shapes, needs, strict=True)]  # fmt: skip


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*[t for t in inputs[1:5] if t is not None])
    ctx.has_bias = inputs[4] is not None
    ctx.settings = (inputs[0], *inputs[5:-1])  # all but grads


def _backward(ctx, grad_out):
    saved = list(ctx.saved_tensors)
    x, weight, mask = saved[:3]
    bias = saved[3] if ctx.has_bias else None
    kind, *rest = ctx.settings
    needs = [ctx.needs_input_grad[1], ctx.needs_input_grad[2], ctx.has_bias and ctx.needs_input_grad[4]]
    grads = masked_layer_backward(grad_out.contiguous(), kind, x, weight, mask, bias, *rest, needs)
    grad_x, grad_w, grad_b = (g if need else None for g, need in zip(grads, needs, strict=True))
    return (None, grad_x, grad_w, None, grad_b) + (None,) * 8


masked_layer.register_autograd(_backward, setup_context=_setup_context)


def compiled_call(kind: str, x, weight, mask, bias, geometry, dense_weight_grad: bool, implementation: str,
                  spike_input: bool | None) -> torch.Tensor:  # fmt: skip
    """The layer as one op of the compiled graph (see the module's docstring)."""
    stride, padding, dilation, groups = geometry
    spikes = -1 if spike_input is None else int(spike_input)
    grad = torch.is_grad_enabled()
    grads = [grad and x.requires_grad, grad and weight.requires_grad]
    return masked_layer(kind, x, weight, mask, bias, list(stride), list(padding), list(dilation), groups,
                        dense_weight_grad, implementation, spikes, grads)  # fmt: skip
