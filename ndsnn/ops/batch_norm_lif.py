"""``ndsnn.ops.batch_norm_lif``: batch norm over all frames fused with multi-step LIF, spikes out.

Equals ``lif(F.batch_norm(x_seq.flatten(0, 1), ...).view_as(x_seq) + residual, ...)``, the conv -> BN -> LIF
pattern of every spiking VGG / ResNet layer, in one forward pass over x after the statistics and two backward
passes. The membrane potential is recomputed in backward instead of kept, so a layer saves only x (which batch
norm keeps anyway): one full-size activation per layer less than batch norm followed by ``ndsnn.ops.lif``.

The compiled kernels take a scalar leak and threshold and at most MAX_FUSED_STEPS steps; per-channel or
tensor-valued (learnable) neuron parameters, longer sequences and devices without a kernel run the unfused
composition, with the same result.
"""

from __future__ import annotations

import numbers

import torch
from torch.nn import functional as F

from .. import _extension
from .lif import check_lif_args, lif
from .lif_reference import Param, lif_reference, math_dtype
from .surrogate import DEFAULT_ALPHA

MAX_FUSED_STEPS = 64  # csrc/batch_norm_lif.h: kMaxFusedSteps


def _check_channel_vector(value: object, name: str, x_seq: torch.Tensor) -> None:
    if value is None:
        return
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be None or a floating-point tensor of shape [C], got {value!r:.80}")
    channels = x_seq.shape[2]
    if value.shape != (channels,):
        raise ValueError(f"{name} must have shape [C] = [{channels}] (C = x_seq.shape[2]), got {tuple(value.shape)}")
    if value.device != x_seq.device:
        raise ValueError(f"{name} is on {value.device} but x_seq is on {x_seq.device}; put both on one device")


def check_batch_norm_args(
    x_seq: object,
    running_mean: object,
    running_var: object,
    weight: object,
    bias: object,
    training: bool,
    momentum: object,
    eps: object,
    residual: object,
) -> None:
    """Raises TypeError / ValueError naming the offending argument."""
    if not isinstance(x_seq, torch.Tensor) or not x_seq.is_floating_point():
        raise TypeError(f"x_seq must be a floating-point torch.Tensor of shape [T, N, C, ...], got {x_seq!r:.80}")
    if x_seq.dim() < 3:
        raise ValueError(f"x_seq must have shape [T, N, C, ...] (at least 3 dims), got shape {tuple(x_seq.shape)}")
    for name, value in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                        ("bias", bias)):  # fmt: skip
        _check_channel_vector(value, name, x_seq)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError("training=False normalises with running statistics: give running_mean and running_var")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if training and x_seq.numel() // max(x_seq.shape[2], 1) <= 1:
        raise ValueError(
            f"batch statistics need more than 1 value per channel, got x_seq of shape {tuple(x_seq.shape)}"
        )
    if residual is not None:
        if not isinstance(residual, torch.Tensor) or not residual.is_floating_point():
            raise TypeError(f"residual must be None or a floating-point tensor, got {residual!r:.80}")
        if residual.shape != x_seq.shape or residual.device != x_seq.device:
            raise ValueError(
                f"residual must have x_seq's shape {tuple(x_seq.shape)} on {x_seq.device}, got "
                f"{tuple(residual.shape)} on {residual.device}"
            )


def _frames_batch_norm(x_seq: torch.Tensor, running_mean, running_var, weight, bias, training: bool,
                       momentum: float, eps: float) -> torch.Tensor:  # fmt: skip
    return F.batch_norm(x_seq.flatten(0, 1), running_mean, running_var, weight, bias, training, momentum, eps).view_as(
        x_seq
    )


def batch_norm_lif_reference(
    x_seq: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    tau: Param = 2.0,
    v_threshold: Param = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "atan",
    alpha: float | None = None,
    *,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch: F.batch_norm per frame, + residual, lif_reference. Returns (spikes, h)."""
    check_batch_norm_args(x_seq, running_mean, running_var, weight, bias, training, momentum, eps, residual)
    y = _frames_batch_norm(x_seq, running_mean, running_var, weight, bias, training, momentum, eps)
    if residual is not None:
        y = y + residual
    return lif_reference(y, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha)


def can_fuse(x_seq: torch.Tensor, tau: Param, v_threshold: Param) -> bool:
    """Whether batch_norm_lif runs the fused kernels for these arguments (else the unfused composition)."""
    return (
        not isinstance(tau, torch.Tensor)
        and not isinstance(v_threshold, torch.Tensor)
        and x_seq.shape[0] <= MAX_FUSED_STEPS
        and _extension.use_kernel("batch_norm_lif_forward", x_seq.device)
    )


@torch.no_grad()
def _update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                          var: torch.Tensor, count: int, momentum: float) -> None:  # fmt: skip
    """As F.batch_norm: exponential averages of the mean and the unbiased variance."""
    running_mean.lerp_(mean.to(running_mean.dtype), momentum)
    running_var.lerp_((var * (count / (count - 1))).to(running_var.dtype), momentum)


def batch_norm_lif(
    x_seq: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    tau: Param = 2.0,
    v_threshold: Param = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "atan",
    alpha: float | None = None,
    *,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Spikes of LIF(batch_norm(x_seq) + residual) for x_seq [T, N, C, ...], normalised per channel C over
    all frames and samples (F.batch_norm's arguments and semantics: training uses and, with running
    statistics given, updates them in place), then multi-step LIF (ndsnn.ops.lif's arguments)."""
    check_batch_norm_args(x_seq, running_mean, running_var, weight, bias, training, momentum, eps, residual)
    check_lif_args(x_seq, tau, v_threshold, v_reset, surrogate, alpha, None)
    if residual is not None and residual.dtype != x_seq.dtype:
        residual = residual.to(x_seq.dtype)
    if not can_fuse(x_seq, tau, v_threshold):
        y = _frames_batch_norm(x_seq, running_mean, running_var, weight, bias, training, momentum, eps)
        return lif(y if residual is None else y + residual, tau, v_threshold, v_reset, decay_input, detach_reset,
                   surrogate, alpha)  # fmt: skip
    alpha = DEFAULT_ALPHA[surrogate] if alpha is None else float(alpha)
    if training:
        mean, var = torch.ops.ndsnn.batch_norm_stats(x_seq.detach())
        if running_mean is not None:
            _update_running_stats(running_mean, running_var, mean, var, x_seq.numel() // x_seq.shape[2], momentum)
    else:
        mean, var = running_mean.detach(), running_var.detach()
    invstd = torch.rsqrt(var.float() + eps) if var.dtype != torch.float64 else torch.rsqrt(var + eps)
    return torch.ops.ndsnn.batch_norm_lif_forward(
        x_seq, residual, weight, bias, mean, invstd, float(tau), float(v_threshold),
        None if v_reset is None else float(v_reset), decay_input, detach_reset, surrogate, alpha, training,
    )  # fmt: skip


def _register() -> None:
    """Fake kernels and autograd for the compiled ops (only when the library is loaded)."""

    @torch.library.register_fake("ndsnn::batch_norm_stats")
    def _stats_fake(x):
        channels = x.shape[2]
        return x.new_empty(channels, dtype=math_dtype(x.dtype)), x.new_empty(channels, dtype=math_dtype(x.dtype))

    @torch.library.register_fake("ndsnn::batch_norm_lif_forward")
    def _forward_fake(x, residual, weight, bias, mean, invstd, tau, v_threshold, v_reset, decay_input,
                      detach_reset, surrogate, alpha, batch_stats):  # fmt: skip
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("ndsnn::batch_norm_lif_backward")
    def _backward_fake(grad_spikes, x, residual, weight, bias, mean, invstd, tau, v_threshold, v_reset,
                       decay_input, detach_reset, surrogate, alpha, batch_stats):  # fmt: skip
        grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
        grad_residual = torch.empty_like(grad_x) if residual is not None else x.new_empty(0)
        grad_weight = weight.new_empty(weight.shape) if weight is not None else x.new_empty(0)
        grad_bias = bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)
        return grad_x, grad_residual, grad_weight, grad_bias

    def setup_context(ctx, inputs, output):
        x, residual, weight, bias, mean, invstd, *settings = inputs
        ctx.save_for_backward(x, residual, weight, bias, mean, invstd)
        ctx.settings = settings

    def backward(ctx, grad_spikes):
        x, residual, weight, bias, mean, invstd = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_x, grad_residual, grad_weight, grad_bias = torch.ops.ndsnn.batch_norm_lif_backward(
            grad_spikes, x, residual, weight, bias, mean, invstd, *ctx.settings
        )
        return (
            grad_x if needs[0] else None,
            grad_residual if residual is not None and needs[1] else None,
            grad_weight if weight is not None and needs[2] else None,
            grad_bias if bias is not None and needs[3] else None,
        ) + (None,) * 10

    torch.library.register_autograd("ndsnn::batch_norm_lif_forward", backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        raise NotImplementedError(
            "ndsnn.ops.batch_norm_lif does not support double backward; use ndsnn.ops.batch_norm_lif_reference for that"
        )

    torch.library.register_autograd(
        "ndsnn::batch_norm_lif_backward", no_double_backward, setup_context=lambda ctx, inputs, output: None
    )


if _extension.load_at_import().loaded:
    _register()
