"""A small spiking convnet for 8x8 (scikit-learn digits) and 28x28 (Fashion-MNIST) inputs.

stem conv(C -> w1) + BN, LIF; conv(w1 -> w2) + BN + LIF; max-pool 2 (twice for inputs of 16 pixels or more,
after each conv); fully connected (w2 * s * s -> hidden) + LIF; fully connected (hidden -> classes).
Widths default to (32, 64) and hidden 128: the smallest net that reaches the usual accuracies of these
datasets within a few epochs, and cheap enough for a CPU."""

from __future__ import annotations

import torch
from torch import nn

from ..nn.pooling import MaxPool2d
from .layers import ConvBNLIF, PerFrame, SpikingClassifier, classifier_linear, make_lif, stem_conv


class SpikingConvNet(SpikingClassifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, timesteps: int = 4, image_size: int = 28,
                 widths: tuple[int, int] = (32, 64), hidden: int = 128, lif: dict | None = None) -> None:  # fmt: skip
        super().__init__(timesteps)
        if image_size < 4:
            raise ValueError(f"image_size must be at least 4 for the convnet, got {image_size}")
        two_pools = image_size >= 16
        self.stem = stem_conv(in_channels, widths[0])
        self.stem_lif = make_lif(lif)
        self.pool1 = PerFrame(MaxPool2d(2)) if two_pools else nn.Identity()
        self.block = ConvBNLIF(widths[0], widths[1], lif=lif)
        self.pool2 = PerFrame(MaxPool2d(2))
        side = image_size // 4 if two_pools else image_size // 2
        self.fc1 = classifier_linear(widths[1] * side * side, hidden)
        self.fc_lif = make_lif(lif)
        self.fc2 = classifier_linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.fire_stem(images, self.stem, self.stem_lif, pool=self.pool1)
        x = self.pool2(self.block(x))
        x = self.fc_lif(self.fc1(x.flatten(2)))
        return self.fc2(x)
