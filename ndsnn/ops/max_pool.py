"""``ndsnn.ops.max_pool``: max pooling whose window is its stride (2x2 / 2 between stages of VGG and the convnet).

Runs ``torch.ops.ndsnn.max_pool_window_forward`` / ``_backward`` (compiled CPU kernels: a one-byte index of the
maximum's place in its window instead of max_pool2d's int64 indices, and a backward that writes every input
position instead of zero-filling the input gradient and scattering into it) and F.max_pool2d elsewhere. Values
and gradients are max_pool2d's: the first maximum of a window in row-major order takes the gradient, as on
PyTorch's CPU (on spikes, windows of equal values are the rule, so this rule is what training sees).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _extension

OPS = ("max_pool_window_forward", "max_pool_window_backward")
MAX_WINDOW = 16  # the window's places fit the one-byte index


def kernel_serves(x: torch.Tensor, window: int) -> bool:
    """Whether the compiled kernel computes max_pool2d(x, window) (4-D floating input the window fits)."""
    return (
        x.dim() == 4
        and x.is_floating_point()
        and 1 <= window <= MAX_WINDOW
        and x.shape[2] >= window
        and x.shape[3] >= window
        and _extension.kernel_ready(OPS[0], x.device)
    )


def max_pool_window(x: torch.Tensor, window: int) -> torch.Tensor:
    """F.max_pool2d(x, window) (stride = window, no padding, floor), by the compiled kernel where it serves."""
    if kernel_serves(x, window):
        return torch.ops.ndsnn.max_pool_window_forward(x, window)[0]
    return F.max_pool2d(x, window)


def _register() -> None:
    backward_op = torch.ops.ndsnn.max_pool_window_backward

    @torch.library.register_fake("ndsnn::max_pool_window_forward")
    def _forward_fake(x, window):
        shape = (x.shape[0], x.shape[1], x.shape[2] // window, x.shape[3] // window)
        return x.new_empty(shape), x.new_empty(shape, dtype=torch.uint8)

    @torch.library.register_fake("ndsnn::max_pool_window_backward")
    def _backward_fake(grad_out, index, input_size, window):
        return grad_out.new_empty(input_size)

    def setup_context(ctx, inputs, output):
        x, window = inputs
        ctx.save_for_backward(output[1])
        ctx.input_size = list(x.shape)
        ctx.window = window
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_out, grad_index):
        if grad_out is None:
            return None, None
        (index,) = ctx.saved_tensors
        return backward_op(grad_out, index, ctx.input_size, ctx.window), None

    torch.library.register_autograd("ndsnn::max_pool_window_forward", backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        raise NotImplementedError(
            "ndsnn.ops.max_pool_window does not support double backward (create_graph=True); use "
            "torch.nn.functional.max_pool2d for that"
        )

    torch.library.register_autograd(
        "ndsnn::max_pool_window_backward", no_double_backward, setup_context=lambda ctx, inputs, output: None
    )


if _extension.load_at_import().loaded:
    _register()
