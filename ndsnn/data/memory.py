"""A data set held in memory as one uint8 image tensor and one label tensor."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .registry import DatasetInfo


class InMemoryImages(Dataset):
    """Items are (uint8 image [C, H, W], int label); `images` and `labels` are exposed for whole-batch indexing."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo) -> None:
        expected = (info.in_channels, info.image_size, info.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise ValueError(f"images must be uint8 [N, {shape}], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.info = info

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
