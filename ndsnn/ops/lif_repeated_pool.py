"""``ndsnn.ops.lif_repeated_max_pool``: LIF neurons under one constant input current, then max pooling.

The direct-encoding stem of a small convnet fires its first neurons at full resolution and pools them at once.
Run apart, lif_repeated writes the full-size spikes [T, N, C, H, W], max pooling reads them and keeps an index
of each maximum, and backward writes a full-size spike gradient that LIF's backward reads again: four passes
over the largest tensors of the network. ``torch.ops.ndsnn.lif_repeated_max_pool_forward`` keeps each group of
pooling rows' spikes in a small buffer and writes only the pooled spikes (and how many spikes fired, for firing
rates); backward recomputes the spikes of each window from the frame and routes the pooled gradient to the
window's first maximum in row-major order, max_pool2d's own rule. Where no such kernel exists (CUDA for now),
the op runs lif_repeated and max_pool2d.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import _extension
from .lif import _split_param
from .lif_reference import Param
from .lif_repeated import check_repeated_args, lif_repeated
from .surrogate import DEFAULT_ALPHA

FORWARD_OP = "lif_repeated_max_pool_forward"
MAX_WINDOW = 16


class PooledSpikes(NamedTuple):
    """The pooled spikes [T, N, C, H // window, W // window] and the number of spikes the neurons fired before
    pooling (an int64 0-dim tensor, for firing rates)."""

    spikes: torch.Tensor
    fired: torch.Tensor


def check_window(current: torch.Tensor, window: int) -> None:
    """Raises ValueError unless current is [N, C, H, W] and window an int in [1, MAX_WINDOW] that fits H and W."""
    if not isinstance(current, torch.Tensor) or current.dim() != 4:
        shape = tuple(current.shape) if isinstance(current, torch.Tensor) else type(current).__name__
        raise ValueError(f"current must be a tensor of shape [N, C, H, W] (one frame), got {shape}")
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be an int in [1, {MAX_WINDOW}], got {window!r}")
    if current.shape[2] < window or current.shape[3] < window:
        raise ValueError(f"window {window} does not fit the frame of shape {tuple(current.shape)}")


def lif_repeated_max_pool(
    current: torch.Tensor,
    steps: int,
    window: int,
    tau: Param = 2.0,
    v_threshold: Param = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "atan",
    alpha: float | None = None,
) -> PooledSpikes:
    """max_pool2d(lif_repeated(current, steps, ...) per step, window) for current [N, C, H, W] (stride = window,
    no padding, floor), equal to it in value and gradient; with the number of spikes fired."""
    check_window(current, window)
    check_repeated_args(current, steps, tau, v_threshold, v_reset, surrogate, alpha)
    if not _extension.kernel_ready(FORWARD_OP, current.device):
        spikes = lif_repeated(current, steps, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha)
        pooled = F.max_pool2d(spikes.flatten(0, 1), window).unflatten(0, spikes.shape[:2])
        return PooledSpikes(pooled, torch.count_nonzero(spikes.detach()))
    alpha = DEFAULT_ALPHA[surrogate] if alpha is None else float(alpha)
    tau_t, tau_v = _split_param(tau)
    th_t, th_v = _split_param(v_threshold)
    v_reset = None if v_reset is None else float(v_reset)
    pooled, fired = torch.ops.ndsnn.lif_repeated_max_pool_forward(
        current, steps, window, tau_t, th_t, tau_v, th_v, v_reset, decay_input, detach_reset, surrogate, alpha
    )
    return PooledSpikes(pooled, fired)


def _register() -> None:
    """Fake kernels and autograd for the compiled ops (only when the library is loaded)."""

    @torch.library.register_fake("ndsnn::lif_repeated_max_pool_forward")
    def _forward_fake(current, steps, window, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input,
                      detach_reset, surrogate, alpha):  # fmt: skip
        shape = (steps, current.shape[0], current.shape[1], current.shape[2] // window, current.shape[3] // window)
        return current.new_empty(shape), current.new_empty((), dtype=torch.int64)

    @torch.library.register_fake("ndsnn::lif_repeated_max_pool_backward")
    def _backward_fake(grad_pooled, current, window, tau, v_threshold, tau_value, v_threshold_value, v_reset,
                       decay_input, detach_reset, surrogate, alpha, tau_grad, v_threshold_grad):  # fmt: skip
        grad_tau = tau.new_empty(tau.shape) if tau_grad else current.new_empty(0)
        grad_th = v_threshold.new_empty(v_threshold.shape) if v_threshold_grad else current.new_empty(0)
        return torch.empty_like(current, memory_format=torch.contiguous_format), grad_tau, grad_th

    def setup_context(ctx, inputs, output):
        current, _steps, window, tau, v_threshold, *settings = inputs
        ctx.save_for_backward(current, tau, v_threshold)
        ctx.window = window
        ctx.settings = settings
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_pooled, _grad_fired):
        current, tau, v_threshold = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if grad_pooled is None:
            return (None,) * 12
        tau_grad = tau is not None and needs[3]
        th_grad = v_threshold is not None and needs[4]
        grad_current, grad_tau, grad_th = torch.ops.ndsnn.lif_repeated_max_pool_backward(
            grad_pooled, current, ctx.window, tau, v_threshold, *ctx.settings, tau_grad, th_grad
        )
        return (grad_current if needs[0] else None, None, None, grad_tau if tau_grad else None,
                grad_th if th_grad else None) + (None,) * 7  # fmt: skip

    torch.library.register_autograd("ndsnn::lif_repeated_max_pool_forward", backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        raise NotImplementedError(
            "ndsnn.ops.lif_repeated_max_pool does not support double backward (differentiating its gradient); use "
            "ndsnn.ops.lif_reference and max_pool2d on the expanded input for that"
        )

    torch.library.register_autograd(
        "ndsnn::lif_repeated_max_pool_backward", no_double_backward, setup_context=lambda ctx, inputs, output: None
    )


if _extension.load_at_import().loaded:
    _register()
