"""The spiking models: shapes for every supported input size, direct encoding, the per-step loss, that
every conv / linear is a sparse layer, and argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndsnn import models
from ndsnn.nn import LIF, MaskedWeight, SparseLinear, SparseSpikingConv2d


@pytest.mark.parametrize(
    "name, channels, size, classes",
    [("convnet", 1, 8, 10), ("convnet", 1, 28, 10), ("convnet", 3, 32, 7),
     ("vgg16", 3, 32, 10), ("vgg16", 3, 64, 200), ("resnet19", 3, 32, 100), ("resnet19", 3, 64, 200)],
)  # fmt: skip
def test_logits_per_time_step(name, channels, size, classes):
    model = models.create(name, classes, channels, timesteps=2, image_size=size)
    images = torch.randn(3, channels, size, size)
    logits = model(images)
    assert logits.shape == (2, 3, classes)
    loss = models.per_step_cross_entropy(logits, torch.randint(0, classes, (3,)))
    loss.backward()
    stem = next(m for m in model.modules() if isinstance(m, SparseSpikingConv2d))
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0


def test_every_weight_layer_is_sparse_and_neurons_are_lif():
    model = models.create("resnet19", 10, 3, timesteps=2)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(isinstance(m, MaskedWeight) for m in layers)
    assert sum(isinstance(m, SparseLinear) for m in layers) == 2  # fc1, fc2
    # stem, 8 blocks of 2 convs, 3 projection shortcuts; one LIF after the stem, 2 per block, 1 after fc1
    assert sum(isinstance(m, SparseSpikingConv2d) for m in layers) == 1 + 16 + 3
    assert sum(isinstance(m, LIF) for m in model.modules()) == 1 + 16 + 1


def test_vgg16_has_thirteen_convolutions():
    model = models.create("vgg16", 10, 3, timesteps=1)
    assert sum(isinstance(m, SparseSpikingConv2d) for m in model.modules()) == 13


def test_direct_encoding_equals_identical_frames():
    """The stem runs once and is repeated over T: the same as feeding T copies of the image."""
    torch.manual_seed(1)
    model = models.create("convnet", 10, 1, timesteps=3, image_size=8).eval()
    images = torch.randn(4, 1, 8, 8)
    current = model.stem(images.unsqueeze(0).expand(3, -1, -1, -1, -1).contiguous())
    x = model.pool1(model.stem_lif(current))
    x = model.pool2(model.block(x))
    expected = model.fc2(model.fc_lif(model.fc1(x.flatten(2))))
    torch.testing.assert_close(model(images), expected)


@pytest.mark.parametrize("name", ["convnet", "resnet19"])
def test_stem_neurons_from_one_frame_match_the_expanded_input(name):
    """fire_stem (LIF on the one frame, steps=T) gives the spikes and every gradient of LIF on T copies."""
    torch.manual_seed(2)
    size = 8 if name == "convnet" else 16
    model = models.create(name, 10, 1 if name == "convnet" else 3, timesteps=3, image_size=size)
    images = torch.randn(2, model.stem[0].module.in_channels, size, size)
    frame = model.fire_stem(images, model.stem, model.stem_lif)
    copies = model.stem_lif(model.encode(images, model.stem))
    assert torch.equal(frame, copies)
    g = torch.randn_like(frame)
    got = torch.autograd.grad(frame, list(model.stem.parameters()), g)
    want = torch.autograd.grad(copies, list(model.stem.parameters()), g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_loss_is_mean_over_steps_of_cross_entropy():
    logits = torch.randn(5, 6, 4)
    labels = torch.randint(0, 4, (6,))
    expected = sum(nn.functional.cross_entropy(logits[t], labels) for t in range(5)) / 5
    torch.testing.assert_close(models.per_step_cross_entropy(logits, labels), expected)


def test_default_neurons_follow_kim_et_al():
    model = models.create("convnet", 10, 1, timesteps=2, image_size=8)
    lif = next(m for m in model.modules() if isinstance(m, LIF))
    assert lif.tau == pytest.approx(4 / 3) and lif.detach_reset and lif.v_reset == 0.0
    custom = models.create("convnet", 10, 1, timesteps=2, image_size=8, lif={"tau": 2.0, "v_reset": None})
    lif = next(m for m in custom.modules() if isinstance(m, LIF))
    assert lif.tau == 2.0 and lif.v_reset is None


@pytest.mark.parametrize(
    "kwargs, message",
    [({"name": "alexnet"}, "model must be one of"), ({"timesteps": 0}, "timesteps"),
     ({"num_classes": 0}, "num_classes"), ({"name": "vgg16", "image_size": 28}, "multiple of 32"),
     ({"name": "resnet19", "image_size": 30}, "multiple of 8"), ({"image_size": 2}, "at least 4")],
)  # fmt: skip
def test_bad_arguments(kwargs, message):
    arguments = {"name": "convnet", "num_classes": 10, "in_channels": 1, "timesteps": 2, "image_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        models.create(**arguments)


def test_images_must_be_four_dimensional():
    model = models.create("convnet", 10, 1, timesteps=2, image_size=8)
    with pytest.raises(ValueError, match=r"images must be \[N, C, H, W\]"):
        model(torch.randn(2, 2, 1, 8, 8))
