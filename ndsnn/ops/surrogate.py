"""Surrogate gradients of the spike function, with SpikingJelly's formulas and default alphas.

The forward is always the Heaviside step s = (u >= 0) with u = h - v_threshold; only the backward differs.
The compiled kernels implement the same formulas in csrc/lif_math.h.
"""

from __future__ import annotations

import math

import torch

DEFAULT_ALPHA: dict[str, float] = {
    "atan": 2.0,  # alpha / 2 / (1 + (pi / 2 * alpha * u)^2)
    "sigmoid": 4.0,  # alpha * sigmoid(alpha u) * (1 - sigmoid(alpha u))
    "triangle": 1.0,  # max(0, alpha - alpha^2 |u|)  (SpikingJelly's PiecewiseQuadratic)
    "rectangle": 1.0,  # alpha if |u| < 0.5 / alpha else 0  (SpikingJelly's Rect)
    "soft_sign": 2.0,  # 1 / (2 alpha (1 / alpha + |u|)^2)
}
SURROGATES: tuple[str, ...] = tuple(DEFAULT_ALPHA)


def surrogate_grad(u: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
    """d(spike)/du used in backward, evaluated at u = h - v_threshold."""
    if name == "atan":
        a = alpha / 2
        z = math.pi * a * u
        return a / (1 + z * z)
    if name == "sigmoid":
        sig = torch.sigmoid(alpha * u)
        return alpha * (1 - sig) * sig
    if name == "triangle":
        return (alpha - alpha * alpha * u.abs()).clamp_min(0)
    if name == "rectangle":
        return (u.abs() < 0.5 / alpha).to(u.dtype) * alpha
    if name == "soft_sign":
        return 1 / (2 * alpha * (1 / alpha + u.abs()) ** 2)
    raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {name!r}")


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, surrogate-gradient backward."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.name, ctx.alpha = name, alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (u,) = ctx.saved_tensors
        return grad * surrogate_grad(u, ctx.name, ctx.alpha), None, None


def spike(u: torch.Tensor, name: str = "atan", alpha: float | None = None) -> torch.Tensor:
    """Heaviside step of u with the named surrogate gradient."""
    return SpikeFunction.apply(u, name, DEFAULT_ALPHA[name] if alpha is None else alpha)
