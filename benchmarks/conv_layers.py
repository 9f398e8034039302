"""The convolution layer shapes of the SNN models this library targets, at CIFAR size (32x32 input).

VGG-16: the 13 3x3 convolutions of the CIFAR VGG-16 used by NDSNN and the sparse-SNN papers it compares with
(64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3; stride 1, padding 1; pooling halves the size).
ResNet-19: the tdBN ResNet-19 (Zheng et al., AAAI 2021): a 3x3 stem of 128 channels, then 3 / 3 / 2 basic
blocks of 128 / 256 / 512 channels at 32 / 16 / 8 pixels, the first block of each later stage with a stride-2
3x3 convolution and a stride-2 1x1 shortcut. Repeated shapes are listed once, with how often they occur.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvLayer:
    model: str
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    size: int  # input height = width
    count: int  # occurrences in the model

    @property
    def key(self) -> str:
        return f"{self.model}/{self.name}"


VGG16 = [
    ConvLayer("vgg16", "conv1", 3, 64, 3, 1, 1, 32, 1),
    ConvLayer("vgg16", "conv2", 64, 64, 3, 1, 1, 32, 1),
    ConvLayer("vgg16", "conv3", 64, 128, 3, 1, 1, 16, 1),
    ConvLayer("vgg16", "conv4", 128, 128, 3, 1, 1, 16, 1),
    ConvLayer("vgg16", "conv5", 128, 256, 3, 1, 1, 8, 1),
    ConvLayer("vgg16", "conv6-7", 256, 256, 3, 1, 1, 8, 2),
    ConvLayer("vgg16", "conv8", 256, 512, 3, 1, 1, 4, 1),
    ConvLayer("vgg16", "conv9-10", 512, 512, 3, 1, 1, 4, 2),
    ConvLayer("vgg16", "conv11-13", 512, 512, 3, 1, 1, 2, 3),
]

RESNET19 = [
    ConvLayer("resnet19", "stem", 3, 128, 3, 1, 1, 32, 1),
    ConvLayer("resnet19", "stage1", 128, 128, 3, 1, 1, 32, 6),
    ConvLayer("resnet19", "stage2-down", 128, 256, 3, 2, 1, 32, 1),
    ConvLayer("resnet19", "stage2-shortcut", 128, 256, 1, 2, 0, 32, 1),
    ConvLayer("resnet19", "stage2", 256, 256, 3, 1, 1, 16, 5),
    ConvLayer("resnet19", "stage3-down", 256, 512, 3, 2, 1, 16, 1),
    ConvLayer("resnet19", "stage3-shortcut", 256, 512, 1, 2, 0, 16, 1),
    ConvLayer("resnet19", "stage3", 512, 512, 3, 1, 1, 8, 3),
]

LAYERS = VGG16 + RESNET19
