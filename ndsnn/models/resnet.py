"""Spiking ResNet-19 as in Kim et al. (ECCV 2022), after Zheng et al. (AAAI 2021): a stem conv(3x3, 64) + BN
+ LIF, three stages of basic blocks (128 x3, 256 x3, 512 x2 channels), each stage starting with stride 2,
global average pooling, fully connected 512 -> 256 + LIF, fully connected 256 -> classes.

Basic block: conv3x3-BN-LIF, conv3x3-BN, plus the shortcut (identity, or conv1x1-BN when the shape changes),
then LIF: the sum is a membrane input, so every block emits spikes. Spatial size: 32 -> 4 (CIFAR),
64 -> 8 (TinyImageNet) before pooling."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import SparseSpikingConv2d, batch_norm_then_lif
from .layers import ConvBNLIF, PerFrame, SpikingClassifier, classifier_linear, make_lif, stem_conv

RESNET19_STAGES: tuple[tuple[int, int], ...] = ((128, 3), (256, 3), (512, 2))  # (width, blocks)


class SpikingBasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, lif: dict | None) -> None:
        super().__init__()
        self.conv_bn_lif = ConvBNLIF(in_channels, out_channels, stride=stride, lif=lif)
        self.conv = SparseSpikingConv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.conv.spike_input = True
        self.bn = PerFrame(nn.BatchNorm2d(out_channels))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            projection = SparseSpikingConv2d(in_channels, out_channels, 1, stride, 0, bias=False)
            projection.spike_input = True
            self.shortcut = nn.Sequential(projection, PerFrame(nn.BatchNorm2d(out_channels)))
        self.lif = make_lif(lif)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x_seq)
        return batch_norm_then_lif(self.bn.module, self.lif, self.conv(self.conv_bn_lif(x_seq)), residual)


class SpikingResNet19(SpikingClassifier):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, timesteps: int = 5, image_size: int = 32,
                 lif: dict | None = None) -> None:  # fmt: skip
        super().__init__(timesteps)
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 for ResNet-19 (3 strided stages), got {image_size}")
        self.stem = stem_conv(in_channels, 64)
        self.stem_lif = make_lif(lif)
        blocks: list[nn.Module] = []
        channels = 64
        for width, count in RESNET19_STAGES:
            for index in range(count):
                blocks.append(SpikingBasicBlock(channels, width, 2 if index == 0 else 1, lif))
                channels = width
        self.stages = nn.Sequential(*blocks)
        self.pool = PerFrame(nn.AdaptiveAvgPool2d(1))
        self.fc1 = classifier_linear(channels, 256, spikes=False)  # global average of spikes: real-valued
        self.fc_lif = make_lif(lif)
        self.fc2 = classifier_linear(256, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.fire_stem(images, self.stem, self.stem_lif))
        x = self.fc_lif(self.fc1(self.pool(x).flatten(2)))
        return self.fc2(x)
