"""SparseSpikingConv2d / SparseLinear as drop-ins, converting models, and pruned weights staying zero."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ndsnn.nn import SparseLinear, SparseSpikingConv2d, keep_pruned_zero, masked_modules, sparsify, zero_pruned_


def _random_mask(shape, sparsity, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) >= sparsity


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_channels=3, out_channels=5, kernel_size=3, padding=1),
        dict(in_channels=4, out_channels=6, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
        dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, bias=False),
        dict(in_channels=3, out_channels=2, kernel_size=4, padding="same"),  # uneven 'same' padding
        dict(in_channels=3, out_channels=2, kernel_size=3, padding="valid"),
        dict(in_channels=3, out_channels=2, kernel_size=3, padding=1, padding_mode="reflect"),
        dict(in_channels=3, out_channels=2, kernel_size=3, padding=2, padding_mode="circular"),
    ],
)
@pytest.mark.parametrize("implementation", ["auto", "sparse"])
def test_conv_is_a_drop_in_for_nn_conv2d(kwargs, implementation):
    torch.manual_seed(0)
    dense = nn.Conv2d(**kwargs)
    sparse = SparseSpikingConv2d(**kwargs)
    sparse.load_state_dict({**dense.state_dict(), "weight_mask": sparse.weight_mask})
    sparse.implementation = implementation
    x = torch.randn(2, kwargs["in_channels"], 9, 8)
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)
    mask = _random_mask(sparse.weight.shape, 0.7)
    sparse.set_mask(mask)
    with torch.no_grad():
        dense.weight.mul_(mask)
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)


def test_conv_multistep_input_folds_time():
    conv = SparseSpikingConv2d(3, 4, 3, padding=1)
    conv.set_mask(_random_mask(conv.weight.shape, 0.5))
    x = (torch.rand(5, 2, 3, 6, 6) < 0.2).float()
    out = conv(x)
    assert out.shape == (5, 2, 4, 6, 6)
    for t in range(5):
        torch.testing.assert_close(out[t], conv(x[t]))
    with pytest.raises(ValueError, match=r"expects input \[N, C, H, W\] or \[T, N, C, H, W\]"):
        conv(torch.randn(3, 6, 6))


def test_linear_is_a_drop_in_and_takes_time_steps():
    torch.manual_seed(0)
    dense, sparse = nn.Linear(10, 4), SparseLinear(10, 4)
    sparse.weight.data.copy_(dense.weight)
    sparse.bias.data.copy_(dense.bias)
    mask = _random_mask(sparse.weight.shape, 0.6)
    sparse.set_mask(mask)
    x = torch.randn(3, 5, 10)
    torch.testing.assert_close(sparse(x), F.linear(x, dense.weight * mask, dense.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: SparseSpikingConv2d(2, 3, 3), lambda: SparseLinear(6, 4)])
def test_mask_is_a_saved_bool_buffer_with_density(make):
    layer = make()
    mask = _random_mask(layer.weight.shape, 0.75, seed=3)
    layer.set_mask(mask)
    assert layer.density == pytest.approx(mask.float().mean().item())
    assert layer.sparsity == pytest.approx(1 - layer.density)
    assert torch.count_nonzero(layer.weight[~mask]) == 0
    state = layer.state_dict()
    assert state["weight_mask"].dtype == torch.bool
    fresh = make()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weight_mask, mask)
    assert torch.equal(fresh.weight, layer.weight)


def test_set_mask_rejects_bad_masks():
    layer = SparseSpikingConv2d(2, 3, 3)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of weight's shape \(3, 2, 3, 3\)"):
        layer.set_mask(torch.ones(3, 2, 3, 3))
    with pytest.raises(ValueError, match="mask must be a bool tensor of weight's shape"):
        layer.set_mask(torch.ones(3, 2, 3, dtype=torch.bool))


def test_gradients_of_pruned_weights_are_zero_unless_asked():
    layer = SparseSpikingConv2d(3, 4, 3, padding=1)
    layer.implementation = "sparse"
    mask = _random_mask(layer.weight.shape, 0.8)
    layer.set_mask(mask)
    x = torch.randn(2, 3, 5, 5)
    layer(x).square().sum().backward()
    assert torch.count_nonzero(layer.weight.grad[~mask]) == 0
    layer.weight.grad = None
    layer.dense_weight_grad = True
    layer(x).square().sum().backward()
    assert torch.count_nonzero(layer.weight.grad[~mask]) > 0


def _small_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3)), nn.Flatten(), nn.Linear(64, 3)
    )


def test_sparsify_converts_in_place_and_keeps_parameters():
    torch.manual_seed(0)
    model = _small_model()
    params = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 1, 6, 6)
    want = model(x)
    assert sparsify(model) is model
    assert [type(m).__name__ for _, m in masked_modules(model)] == [
        "SparseSpikingConv2d",
        "SparseSpikingConv2d",
        "SparseLinear",
    ]
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    torch.testing.assert_close(model(x), want)
    model(x).sum().backward()
    before = model[0].weight.detach().clone()
    optimizer.step()  # the optimizer made before the conversion still updates the converted layers
    assert not torch.equal(model[0].weight, before)


def test_sparsify_include_filter_and_single_layer():
    model = sparsify(_small_model(), include=lambda name, module: isinstance(module, nn.Conv2d))
    assert isinstance(model[4], nn.Linear) and not isinstance(model[4], SparseLinear)
    layer = sparsify(nn.Linear(3, 2))
    assert isinstance(layer, SparseLinear)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=1e-2),
    ],
)
def test_pruned_weights_and_their_optimizer_state_stay_zero(make_optimizer):
    torch.manual_seed(0)
    model = sparsify(_small_model())
    optimizer = make_optimizer(model.parameters())
    x = torch.randn(4, 1, 6, 6)
    for _ in range(2):  # build up momentum / moments with every weight kept
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    masks = {}
    for name, layer in masked_modules(model):
        masks[name] = _random_mask(layer.weight.shape, 0.8, seed=len(masks))
        layer.set_mask(masks[name])
    # Without the hook, momentum from before the prune moves pruned weights away from zero.
    optimizer.zero_grad()
    model(x).square().mean().backward()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    optimizer.step()
    moved = sum(torch.count_nonzero(layer.weight[~masks[n]]).item() for n, layer in masked_modules(model))
    assert moved > 0
    model.load_state_dict(saved)
    optimizer.load_state_dict(optimizer_state)
    zero_pruned_(model, optimizer)
    handle = keep_pruned_zero(optimizer, model)
    for _ in range(3):
        optimizer.step()
        optimizer.zero_grad()
        model(x).square().mean().backward()
    for name, layer in masked_modules(model):
        assert torch.count_nonzero(layer.weight[~masks[name]]) == 0
        for value in optimizer.state[layer.weight].values():
            if isinstance(value, torch.Tensor) and value.shape == layer.weight.shape:
                assert torch.count_nonzero(value[~masks[name]]) == 0
    handle.remove()
