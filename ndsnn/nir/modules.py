"""The few multi-step modules that NIR graphs need beyond ndsnn.nn and ndsnn.models' PerFrame: all take
[T, N, ...] sequences and act on each frame (the dims after T and N)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.lif_reference import broadcast_param


class FrameFlatten(nn.Module):
    """Flattens the frame dims start_dim..end_dim of [T, N, ...] (frame dims count from 0, as in NIR)."""

    def __init__(self, start_dim: int = 0, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        end = self.end_dim + 2 if self.end_dim >= 0 else self.end_dim
        return x_seq.flatten(self.start_dim + 2, end)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class SumPool2d(nn.Module):
    """Sum over each window of every frame (NIR's SumPool2d): average pooling without the division."""

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = tuple(kernel_size), tuple(stride), tuple(padding)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(x_seq.flatten(0, 1), self.kernel_size, self.stride, self.padding, divisor_override=1)
        return y.unflatten(0, x_seq.shape[:2])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Fire(nn.Module):
    """Memoryless spiking: s = (v_leak + r * x >= v_threshold) at every step.

    This is a NIR LIF neuron whose time constant equals the step dt: one Euler step of tau dv/dt =
    (v_leak - v) + r x then replaces v by v_leak + r x, so nothing is carried over. ndsnn writes max pooling
    of spikes as average pooling followed by such a neuron. Parameters are numbers or per-channel tensors.
    """

    def __init__(self, v_threshold: float | torch.Tensor, r: float | torch.Tensor = 1.0,
                 v_leak: float | torch.Tensor = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.v_threshold, self.r, self.v_leak = v_threshold, r, v_leak
        for name in ("v_threshold", "r", "v_leak"):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                delattr(self, name)
                self.register_buffer(name, value.detach().clone())

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        step = x_seq[0] if x_seq.shape[0] else x_seq.flatten(0, 1)
        r, v_leak, v_threshold = (broadcast_param(p, step) for p in (self.r, self.v_leak, self.v_threshold))
        return ((v_leak + r * x_seq) >= v_threshold).to(x_seq.dtype)

    def extra_repr(self) -> str:
        show = lambda v: "per-channel" if isinstance(v, torch.Tensor) and v.numel() > 1 else float(v)  # noqa: E731
        return f"v_threshold={show(self.v_threshold)}, r={show(self.r)}, v_leak={show(self.v_leak)}"
