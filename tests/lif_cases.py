"""Input builders shared by the LIF tests."""

from __future__ import annotations

import itertools

import torch

RESETS = (0.0, None, -0.25)
SURROGATE_NAMES = ("atan", "sigmoid", "triangle", "rectangle", "soft_sign")
OPTION_GRID = list(itertools.product(RESETS, (True, False), (False, True), SURROGATE_NAMES))
SHAPES = ((1, 3, 5), (4, 2, 3, 7, 5), (7, 1, 2, 3), (3, 5, 4, 1, 1))


def lif_input(shape, device, dtype=torch.float32, scale: float = 1.5) -> torch.Tensor:
    """Inputs around the threshold so that a useful fraction of neurons fire (~20-40%)."""
    return (torch.randn(shape, dtype=torch.float64) * scale + 0.8).to(device=device, dtype=dtype)


def make_params(kind: str, x: torch.Tensor, requires_grad: bool = True):
    """tau, v_threshold as numbers ("float"), one-element tensors ("scalar") or per channel ("channel")."""
    if kind == "float":
        return 2.0, 1.0
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if kind == "scalar":
        tau = torch.tensor([1.7], dtype=dtype, device=x.device)
        th = torch.tensor(0.9, dtype=dtype, device=x.device)
    else:
        channels = x.shape[2]
        tau = torch.linspace(1.3, 4.0, channels, dtype=dtype, device=x.device)
        th = torch.linspace(0.6, 1.4, channels, dtype=dtype, device=x.device)
    return tau.requires_grad_(requires_grad), th.requires_grad_(requires_grad)


def grads(outputs, inputs, grad_outputs):
    """Gradients of outputs w.r.t. the inputs that are tensors requiring grad (None elsewhere)."""
    wanted = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    got = iter(torch.autograd.grad(outputs, wanted, grad_outputs, allow_unused=True))
    return [next(got) if isinstance(t, torch.Tensor) and t.requires_grad else None for t in inputs]


def assert_grads_close(got, want, rtol, atol) -> None:
    """Gradient lists from kernel and reference agree (None where an input needed none)."""
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g.float(), w.float(), rtol=rtol, atol=atol)


def frame_params(kind: str, current: torch.Tensor):
    """tau, v_threshold for an op on one frame [N, C, ...]: numbers, one-element tensors, or one per channel
    (current.shape[1])."""
    if kind == "float":
        return 1.6, 0.9
    dtype = torch.float64 if current.dtype == torch.float64 else torch.float32
    if kind == "scalar":
        return (torch.tensor([1.7], dtype=dtype, device=current.device, requires_grad=True),
                torch.tensor(0.9, dtype=dtype, device=current.device, requires_grad=True))  # fmt: skip
    channels = current.shape[1]
    return (torch.linspace(1.3, 4.0, channels, dtype=dtype, device=current.device).requires_grad_(),
            torch.linspace(0.6, 1.4, channels, dtype=dtype, device=current.device).requires_grad_())  # fmt: skip


def fresh_leaves(*tensors):
    """Detached copies of the tensors (leaves that require grad where the originals did); others as they are."""
    return [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in tensors]
