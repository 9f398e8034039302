"""``ndsnn.ops.lif``: the fused multi-step LIF op.

Dispatches to ``torch.ops.ndsnn.lif_forward`` (compiled CPU / CUDA kernels, one pass over T forward and one
backward) or to the plain-PyTorch reference when no kernel is available. Autograd and fake (meta) kernels are
registered here, so the op works eagerly, under torch.compile and with torch.library.opcheck.
"""

from __future__ import annotations

import math
import numbers

import torch

from .. import _extension
from .lif_reference import Param, lif_reference
from .surrogate import DEFAULT_ALPHA, SURROGATES

COMPACT_SAVED_DTYPES = (torch.float16, torch.bfloat16)


def _check_param(value: object, name: str, x_seq: torch.Tensor) -> None:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(f"{name} must be a number or a floating-point tensor, got {type(value).__name__}")
    if not isinstance(value, torch.Tensor):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        return
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.numel() == 0:
        raise ValueError(f"{name} must have one element or one per channel, got an empty tensor")
    if value.device != x_seq.device:
        raise ValueError(f"{name} is on {value.device} but x_seq is on {x_seq.device}; put both on one device")
    if value.numel() == 1:
        return
    if x_seq.dim() < 3:
        raise ValueError(
            f"a per-channel {name} needs x_seq of shape [T, N, C, ...]; x_seq has shape {tuple(x_seq.shape)}"
        )
    if value.dim() != 1 or value.shape[0] != x_seq.shape[2]:
        raise ValueError(
            f"{name} must have one element or shape [C] = [{x_seq.shape[2]}] (C = x_seq.shape[2]), "
            f"got shape {tuple(value.shape)}"
        )


def _check_tau_values(tau: Param) -> None:
    message = "tau must be > 1 (1/tau is the leak per step, as in SpikingJelly's LIFNode)"
    if not isinstance(tau, torch.Tensor):
        if not tau > 1:
            raise ValueError(f"{message}; got {tau}")
        return
    if torch.compiler.is_compiling():
        return
    if tau.device.type == "cpu":
        if not bool((tau > 1).all()):
            raise ValueError(f"{message}; got min(tau) = {tau.min().item()}")
    else:
        torch._assert_async((tau > 1).all(), message)


def check_lif_args(
    x_seq: object,
    tau: object,
    v_threshold: object,
    v_reset: object,
    surrogate: object,
    alpha: object,
    saved_dtype: object,
) -> None:
    """Raises TypeError / ValueError naming the offending argument."""
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"x_seq must be a torch.Tensor of shape [T, N, ...], got {type(x_seq).__name__}")
    if not x_seq.is_floating_point():
        raise TypeError(f"x_seq must be a floating-point tensor, got dtype {x_seq.dtype}")
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must have shape [T, N, ...] (at least 2 dims), got shape {tuple(x_seq.shape)}")
    _check_param(tau, "tau", x_seq)
    _check_param(v_threshold, "v_threshold", x_seq)
    _check_tau_values(tau)
    if v_reset is not None and (isinstance(v_reset, bool) or not isinstance(v_reset, numbers.Real)):
        raise TypeError(f"v_reset must be a number (hard reset) or None (soft reset), got {v_reset!r}")
    if v_reset is not None and not math.isfinite(v_reset):
        raise ValueError(f"v_reset must be a finite number (hard reset) or None (soft reset), got {v_reset}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {surrogate!r}")
    real = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if alpha is not None and not (real and 0 < alpha < math.inf):
        raise ValueError(f"alpha must be a positive number or None (the surrogate's default), got {alpha!r}")
    if saved_dtype is not None and saved_dtype != x_seq.dtype:
        if not (x_seq.dtype == torch.float32 and saved_dtype in COMPACT_SAVED_DTYPES):
            raise ValueError(
                "saved_dtype must be None (x_seq's dtype) or, for float32 x_seq, torch.float16 or "
                f"torch.bfloat16; got {saved_dtype} for x_seq of dtype {x_seq.dtype}"
            )


def _split_param(value: Param) -> tuple[torch.Tensor | None, float]:
    return (value, 0.0) if isinstance(value, torch.Tensor) else (None, float(value))


def lif(
    x_seq: torch.Tensor,
    tau: Param = 2.0,
    v_threshold: Param = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "atan",
    alpha: float | None = None,
    return_h: bool = False,
    *,
    saved_dtype: torch.dtype | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Multi-step LIF neurons over x_seq [T, N, ...]; returns spikes [T, N, ...] (and h if return_h).

    tau and v_threshold are numbers or tensors (one element, or one per channel = x_seq.shape[2]) that may
    require grad. v_reset=None selects soft reset. h is the membrane potential before reset; it is what
    backward keeps, in saved_dtype (default x_seq's dtype; float16 / bfloat16 halve the saved bytes of
    float32 input, with spikes still reproduced exactly and surrogate gradients within ~1e-3 relative).
    """
    check_lif_args(x_seq, tau, v_threshold, v_reset, surrogate, alpha, saved_dtype)
    alpha = DEFAULT_ALPHA[surrogate] if alpha is None else float(alpha)
    v_reset = None if v_reset is None else float(v_reset)
    forward = _compiled_forward(x_seq, tau, v_threshold)
    if forward is not None:
        tau_t, tau_v = _split_param(tau)
        th_t, th_v = _split_param(v_threshold)
        spikes, h = forward(
            x_seq, tau_t, th_t, tau_v, th_v, v_reset, decay_input, detach_reset, surrogate, alpha, saved_dtype
        )
    else:
        spikes, h = lif_reference(
            x_seq, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, saved_dtype
        )
    return (spikes, h) if return_h else spikes


# The compiled op pairs: the general kernels, and the ones built for the memory roofline that serve a number
# as tau and as v_threshold in these dtypes (CUDA only; used where their tests have passed on the device).
GENERAL_OPS = ("lif_forward", "lif_backward")
FAST_OPS = ("lif_forward_fast", "lif_backward_fast")
FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _compiled_forward(x_seq: torch.Tensor, tau: Param, v_threshold: Param):
    """The compiled forward op that serves this call, or None for the reference."""
    numbers = not isinstance(tau, torch.Tensor) and not isinstance(v_threshold, torch.Tensor)
    if numbers and x_seq.dtype in FAST_DTYPES and _extension.kernel_ready(FAST_OPS[0], x_seq.device):
        return torch.ops.ndsnn.lif_forward_fast
    if _extension.use_kernel(GENERAL_OPS[0], x_seq.device):
        return torch.ops.ndsnn.lif_forward
    return None


def _register() -> None:
    """Fake kernels and autograd for the compiled ops (only when the library is loaded)."""
    for forward, backward in (GENERAL_OPS, FAST_OPS):
        _register_pair(forward, backward)


def _register_pair(forward_name: str, backward_name: str) -> None:
    backward_op = getattr(torch.ops.ndsnn, backward_name)

    @torch.library.register_fake(f"ndsnn::{forward_name}")
    def _lif_forward_fake(x, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input,
                          detach_reset, surrogate, alpha, saved_dtype):  # fmt: skip
        spikes = torch.empty_like(x, memory_format=torch.contiguous_format)
        h = x.new_empty(x.shape, dtype=saved_dtype if saved_dtype is not None else x.dtype)
        return spikes, h

    @torch.library.register_fake(f"ndsnn::{backward_name}")
    def _lif_backward_fake(grad_spikes, grad_h, h, tau, v_threshold, tau_value, v_threshold_value, v_reset,
                           decay_input, detach_reset, surrogate, alpha, tau_grad, v_threshold_grad):  # fmt: skip
        grad_x = torch.empty_like(grad_spikes, memory_format=torch.contiguous_format)
        grad_tau = tau.new_empty(tau.shape) if tau_grad else h.new_empty(0)
        grad_th = v_threshold.new_empty(v_threshold.shape) if v_threshold_grad else h.new_empty(0)
        return grad_x, grad_tau, grad_th

    def setup_context(ctx, inputs, output):
        x, tau, v_threshold, *settings = inputs
        ctx.save_for_backward(output[1], tau, v_threshold)
        ctx.settings = settings[:-1]  # everything but saved_dtype
        ctx.spike_dtype = x.dtype
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_spikes, grad_h):
        h, tau, v_threshold = ctx.saved_tensors
        needs = ctx.needs_input_grad
        tau_grad = tau is not None and needs[1]
        th_grad = v_threshold is not None and needs[2]
        if grad_spikes is None and grad_h is None:
            return (None,) * 11
        if grad_spikes is None:
            grad_spikes = h.new_zeros(h.shape, dtype=ctx.spike_dtype)
        grad_x, grad_tau, grad_th = backward_op(grad_spikes, grad_h, h, tau, v_threshold, *ctx.settings, tau_grad,
                                                th_grad)  # fmt: skip
        return (
            grad_x if needs[0] else None,
            grad_tau if tau_grad else None,
            grad_th if th_grad else None,
        ) + (None,) * 8

    torch.library.register_autograd(f"ndsnn::{forward_name}", backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        raise NotImplementedError(
            "ndsnn.ops.lif does not support double backward (differentiating its gradient, e.g. with "
            "create_graph=True); use ndsnn.ops.lif_reference for that"
        )

    torch.library.register_autograd(
        f"ndsnn::{backward_name}", no_double_backward, setup_context=lambda ctx, inputs, output: None
    )


if _extension.load_at_import().loaded:
    _register()
