"""Masks with an exact number of kept weights: random (sparse from scratch) or by magnitude."""

from __future__ import annotations

import math

import torch


def _check_kept(shape: torch.Size | tuple[int, ...], kept: int) -> int:
    size = math.prod(shape)
    if not isinstance(kept, int) or not 0 <= kept <= size:
        raise ValueError(f"kept must be an integer in [0, {size}] for shape {tuple(shape)}, got {kept!r}")
    return size


def top_k_mask(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """Bool mask of scores' shape keeping the `kept` largest scores (ties broken by position)."""
    size = _check_kept(scores.shape, kept)
    mask = torch.zeros(size, dtype=torch.bool, device=scores.device)
    if kept:
        mask[torch.topk(scores.reshape(-1), kept, sorted=False).indices] = True
    return mask.view(scores.shape)


def random_mask(shape: tuple[int, ...], kept: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """A uniformly random bool mask with exactly `kept` True entries."""
    size = _check_kept(shape, kept)
    order = torch.randperm(size, generator=generator)[:kept].to(device)
    mask = torch.zeros(size, dtype=torch.bool, device=device)
    mask[order] = True
    return mask.view(shape)


def magnitude_mask(weight: torch.Tensor, kept: int) -> torch.Tensor:
    """Keep the `kept` weights of largest magnitude."""
    return top_k_mask(weight.detach().abs(), kept)
