"""Spiking models for image classification, built from ndsnn.nn layers: ``create(name, num_classes,
in_channels, timesteps, image_size)`` with name in MODELS ("vgg16", "resnet19", "convnet")."""

from __future__ import annotations

from torch import nn

from .convnet import SpikingConvNet
from .layers import DEFAULT_LIF, SpikingClassifier, per_step_cross_entropy
from .resnet import SpikingResNet19
from .shrink import shrink
from .vgg import SpikingVGG16

MODELS: dict[str, type[SpikingClassifier]] = {
    "vgg16": SpikingVGG16,
    "resnet19": SpikingResNet19,
    "convnet": SpikingConvNet,
}


def create(name: str, num_classes: int, in_channels: int, timesteps: int, image_size: int = 32,
           **options) -> nn.Module:  # fmt: skip
    """A spiking classifier by name; `options` go to its class (e.g. lif={...} for the neurons)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, timesteps=timesteps,
                        image_size=image_size, **options)  # fmt: skip


__all__ = [
    "DEFAULT_LIF",
    "MODELS",
    "SpikingClassifier",
    "SpikingConvNet",
    "SpikingResNet19",
    "SpikingVGG16",
    "create",
    "per_step_cross_entropy",
    "shrink",
]
