"""Training-time augmentation of a whole batch at once: per-sample random crop after zero padding, random flip."""

from __future__ import annotations

import torch


def augment_batch(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Randomly crop each [C, H, W] sample of `images` back to H x W from its zero-padded copy, and flip half.

    Offsets and flips are drawn from `generator` (on its own device), so the same generator state gives the same
    result. padding=0 and flip=False return `images` itself.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be a batch [N, C, H, W], got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0 and not flip:
        return images
    n, _, height, width = images.shape
    draw_device = generator.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=draw_device).to(images.device)
    flipped = torch.rand(n, generator=generator, device=draw_device).lt(0.5).to(images.device) if flip else None

    padded = images.new_zeros(n, images.shape[1], height + 2 * padding, width + 2 * padding)
    padded[:, :, padding : padding + height, padding : padding + width] = images
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # [N, H]
    steps = torch.arange(width, device=images.device)
    if flipped is not None:
        steps = torch.where(flipped[:, None], width - 1 - steps, steps)  # [N, W]: read columns right to left
    cols = offsets[1, :, None] + steps  # [N, W]
    # Gather rows, then columns, of each sample's padded image: [N, C, H, W+2p] then [N, C, H, W].
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(-1, padded.shape[1], -1, padded.shape[3]))
    return picked_rows.gather(3, cols[:, None, None, :].expand(-1, padded.shape[1], height, -1))
