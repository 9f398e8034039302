"""Plain-PyTorch multi-step LIF: the definition the compiled kernels are held to, and the fallback.

Arithmetic runs in float32 for 16-bit inputs (as the kernels do) and in the input dtype otherwise, with the
same operation order as csrc/lif_math.h, so float32 results match the CPU kernel bit for bit.
"""

from __future__ import annotations

import torch

from .surrogate import spike

Param = float | torch.Tensor


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def broadcast_param(value: Param, x_step: torch.Tensor) -> Param:
    """A per-layer or per-channel parameter shaped to broadcast against one step [N, C, ...]."""
    if not isinstance(value, torch.Tensor):
        return value
    value = value.to(x_step.dtype)
    if value.numel() == 1:
        return value.reshape(())
    return value.reshape((value.numel(),) + (1,) * (x_step.dim() - 2))


def lif_reference(
    x_seq: torch.Tensor,
    tau: Param = 2.0,
    v_threshold: Param = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "atan",
    alpha: float | None = None,
    saved_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (spikes [T, N, ...] in x's dtype, h [T, N, ...] in saved_dtype or x's dtype)."""
    x = x_seq.to(math_dtype(x_seq.dtype))
    tau_b = broadcast_param(tau, x[0]) if x.shape[0] else tau
    th_b = broadcast_param(v_threshold, x[0]) if x.shape[0] else v_threshold
    hard = v_reset is not None
    charge_reset = v_reset if hard else 0.0
    v = torch.full_like(x[0], charge_reset) if x.shape[0] else None
    spikes, hs = [], []
    for x_t in x:
        if decay_input:
            h = v + (x_t - (v - charge_reset)) / tau_b
        else:
            h = v - (v - charge_reset) / tau_b + x_t
        s = spike(h - th_b, surrogate, alpha)
        s_reset = s.detach() if detach_reset else s
        v = h * (1 - s_reset) + charge_reset * s_reset if hard else h - th_b * s_reset
        spikes.append(s)
        hs.append(h)
    if not spikes:
        return torch.empty_like(x_seq), torch.empty_like(x_seq, dtype=saved_dtype or x_seq.dtype)
    spikes_out = torch.stack(spikes)
    h_out = spike_consistent_round(torch.stack(hs), spikes_out.detach(), th_b, saved_dtype or x_seq.dtype)
    return spikes_out.to(x_seq.dtype), h_out


def spike_consistent_round(h: torch.Tensor, spikes: torch.Tensor, v_threshold: Param, dtype: torch.dtype):
    """h in `dtype`, moved one ulp toward the spike's side where rounding crossed the threshold, so that
    (result >= v_threshold) equals the spikes (as the kernels store it). Differentiable as a plain cast."""
    rounded = h.to(dtype)
    if dtype == h.dtype:
        return rounded
    threshold = v_threshold.detach() if isinstance(v_threshold, torch.Tensor) else v_threshold
    crossed = (rounded.detach().to(h.dtype) >= threshold) != spikes.bool()
    toward = torch.where(spikes.bool(), float("inf"), float("-inf")).to(dtype)
    fixed = torch.nextafter(rounded.detach(), toward)
    return rounded + torch.where(crossed, fixed - rounded.detach(), torch.zeros_like(rounded))
