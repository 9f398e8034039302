"""Turn a uint8 image batch into the float input a network expects: [0, 1] scale, then per-channel standardising."""

from __future__ import annotations

import torch

from .registry import DatasetInfo


def normalize_batch(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 (x / 255 - mean) / std, with the data set's per-channel mean and std."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (as loaded), got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != len(info.mean):
        raise ValueError(f"images must be [N, {len(info.mean)}, H, W] for {info.name}, got {tuple(images.shape)}")
    mean = torch.tensor(info.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std
