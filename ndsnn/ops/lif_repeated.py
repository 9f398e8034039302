"""``ndsnn.ops.lif_repeated``: LIF neurons driven by one constant input current at every step.

Direct encoding feeds the same stem output to the first neurons at all T steps. Expanding it to [T, N, ...]
and running ``ndsnn.ops.lif`` stores the repeated input, h, and a per-step input gradient that autograd then
sums over T: three full-size tensors that carry nothing new. ``torch.ops.ndsnn.lif_repeated_forward`` reads
the frame once and writes only the spikes; its backward recomputes h from the frame and returns the frame's
gradient directly. Where no such kernel exists (CUDA for now), the op runs ``lif`` on the expanded frame.
"""

from __future__ import annotations

import torch

from .. import _extension
from .lif import _split_param, check_lif_args, lif
from .lif_reference import Param
from .surrogate import DEFAULT_ALPHA

FORWARD_OP = "lif_repeated_forward"


def check_repeated_args(current: torch.Tensor, steps: int, tau: Param, v_threshold: Param, v_reset: float | None,
                        surrogate: str, alpha: float | None) -> torch.Tensor:  # fmt: skip
    """Raises ValueError for a bad argument of lif_repeated; returns current expanded over the steps (a view)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(current, torch.Tensor) or current.dim() < 1:
        shape = tuple(current.shape) if isinstance(current, torch.Tensor) else type(current).__name__
        raise ValueError(f"current must be a tensor of shape [N, ...] (one frame), got {shape}")
    x_seq = current.expand(steps, *current.shape)
    check_lif_args(x_seq, tau, v_threshold, v_reset, surrogate, alpha, None)
    return x_seq


def lif_repeated(
    current: torch.Tensor,
    steps: int,
    tau: Param = 2.0,
    v_threshold: Param = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "atan",
    alpha: float | None = None,
) -> torch.Tensor:
    """Spikes [steps, N, ...] of LIF neurons whose input is `current` [N, ...] at every step; equal to
    ``lif(current.expand(steps, *current.shape), ...)`` in value and gradient. Per-channel tau / v_threshold
    have one element per channel = current.shape[1]."""
    x_seq = check_repeated_args(current, steps, tau, v_threshold, v_reset, surrogate, alpha)
    if not _extension.kernel_ready(FORWARD_OP, current.device):
        return lif(x_seq, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha)
    alpha = DEFAULT_ALPHA[surrogate] if alpha is None else float(alpha)
    tau_t, tau_v = _split_param(tau)
    th_t, th_v = _split_param(v_threshold)
    v_reset = None if v_reset is None else float(v_reset)
    return torch.ops.ndsnn.lif_repeated_forward(
        current, steps, tau_t, th_t, tau_v, th_v, v_reset, decay_input, detach_reset, surrogate, alpha
    )


def _register() -> None:
    """Fake kernels and autograd for the compiled ops (only when the library is loaded)."""

    @torch.library.register_fake("ndsnn::lif_repeated_forward")
    def _forward_fake(current, steps, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input,
                      detach_reset, surrogate, alpha):  # fmt: skip
        return current.new_empty((steps, *current.shape))

    @torch.library.register_fake("ndsnn::lif_repeated_backward")
    def _backward_fake(grad_spikes, current, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input,
                       detach_reset, surrogate, alpha, tau_grad, v_threshold_grad):  # fmt: skip
        grad_tau = tau.new_empty(tau.shape) if tau_grad else current.new_empty(0)
        grad_th = v_threshold.new_empty(v_threshold.shape) if v_threshold_grad else current.new_empty(0)
        return torch.empty_like(current, memory_format=torch.contiguous_format), grad_tau, grad_th

    def setup_context(ctx, inputs, output):
        current, _steps, tau, v_threshold, *settings = inputs
        ctx.save_for_backward(current, tau, v_threshold)
        ctx.settings = settings

    def backward(ctx, grad_spikes):
        current, tau, v_threshold = ctx.saved_tensors
        needs = ctx.needs_input_grad
        tau_grad = tau is not None and needs[2]
        th_grad = v_threshold is not None and needs[3]
        grad_current, grad_tau, grad_th = torch.ops.ndsnn.lif_repeated_backward(
            grad_spikes, current, tau, v_threshold, *ctx.settings, tau_grad, th_grad
        )
        return (grad_current if needs[0] else None, None, grad_tau if tau_grad else None,
                grad_th if th_grad else None) + (None,) * 7  # fmt: skip

    torch.library.register_autograd("ndsnn::lif_repeated_forward", backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        raise NotImplementedError(
            "ndsnn.ops.lif_repeated does not support double backward (differentiating its gradient); use "
            "ndsnn.ops.lif_reference on the expanded input for that"
        )

    torch.library.register_autograd(
        "ndsnn::lif_repeated_backward", no_double_backward, setup_context=lambda ctx, inputs, output: None
    )


if _extension.load_at_import().loaded:
    _register()
