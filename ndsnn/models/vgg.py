"""Spiking VGG-16 (configuration D of Simonyan & Zisserman) with batch norm, as in Kim et al. (ECCV 2022),
whose setup NDSNN and its baselines share.

13 conv(3x3, padding 1, no bias) + BN + LIF blocks with widths 64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M,
512 x3, M (M: 2x2 max-pool of the spikes), then one fully connected layer from the flattened 512 x s x s
spike map (s = image_size / 32: 1 for CIFAR, 2 for TinyImageNet) to the classes. The first conv sees the
image (direct encoding) and is computed once for all T steps."""

from __future__ import annotations

import torch
from torch import nn

from ..nn.pooling import MaxPool2d
from .layers import ConvBNLIF, PerFrame, SpikingClassifier, classifier_linear, make_lif, stem_conv

VGG16_WIDTHS: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                       512, 512, 512, "M")  # fmt: skip


class SpikingVGG16(SpikingClassifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, timesteps: int = 5, image_size: int = 32,
                 lif: dict | None = None) -> None:  # fmt: skip
        super().__init__(timesteps)
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 for VGG-16 (5 poolings), got {image_size}")
        first = VGG16_WIDTHS[0]
        self.stem = stem_conv(in_channels, first)
        self.stem_lif = make_lif(lif)
        layers: list[nn.Module] = []
        channels = first
        for width in VGG16_WIDTHS[1:]:
            if width == "M":
                layers.append(PerFrame(MaxPool2d(2)))
            else:
                layers.append(ConvBNLIF(channels, int(width), lif=lif))
                channels = int(width)
        self.features = nn.Sequential(*layers)
        side = image_size // 32
        self.classifier = classifier_linear(channels * side * side, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(self.fire_stem(images, self.stem, self.stem_lif))
        return self.classifier(x.flatten(2))
