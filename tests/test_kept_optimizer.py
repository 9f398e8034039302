"""KeptOnlyOptimizer: the optimizer step over the kept weights only, bit-identical to torch.optim's own step
on them (SGD with momentum and Nesterov, Adam, AdamW, weight decay), pruned weights and their state left at
exactly zero, through mask changes (drop and grow), and with the wrapped optimizer's state_dict intact."""

from __future__ import annotations

import pytest
import torch
from sparse_checks import assert_pruned_zero, small_batch, small_model
from torch import nn

import ndsnn
from ndsnn.nn.masking import zero_pruned_
from ndsnn.sparse import create
from ndsnn.sparse.kept_optimizer import KeptOnlyOptimizer

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-plain": lambda p: torch.optim.SGD(p, lr=0.1),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=5e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=5e-2),
}


def _masked_model() -> nn.Module:
    model = ndsnn.nn.sparsify(small_model())
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            module.set_mask(torch.rand(module.weight.shape, generator=generator) < 0.2)
    return model


def _step(model, optimizer, step: int) -> None:
    x, y = small_batch(step)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_bit_identical_to_the_dense_step_on_kept_weights(name):
    dense_model, kept_model = _masked_model(), _masked_model()
    dense, inner = OPTIMIZERS[name](dense_model.parameters()), OPTIMIZERS[name](kept_model.parameters())
    kept = KeptOnlyOptimizer(inner, kept_model)
    for step in range(15):
        for group in (*dense.param_groups, *kept.param_groups):
            group["lr"] *= 0.95  # a schedule: the compact step reads the wrapped groups every time
        _step(dense_model, dense, step)
        zero_pruned_(dense_model, dense)  # what the dense optimizer needs to keep pruned weights at zero
        _step(kept_model, kept, step)
    for a, b in zip(dense_model.parameters(), kept_model.parameters(), strict=True):
        assert torch.equal(a, b)
        for key, value in dense.state[a].items():
            assert torch.equal(value, inner.state[b][key]), key
    for module in kept_model.modules():
        if hasattr(module, "weight_mask"):
            assert torch.count_nonzero(module.weight[~module.weight_mask]) == 0
            for value in inner.state[module.weight].values():
                if value.shape == module.weight.shape:
                    assert torch.count_nonzero(value[~module.weight_mask]) == 0


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_through_drop_and_grow_with_dense_gradient_steps(name):
    """RigL's grow steps bring dense gradients; the masks change every two steps."""
    results = []
    for wrap in (False, True):
        model = small_model()
        inner = OPTIMIZERS[name](model.parameters())
        method = create("rigl", model, inner, sparsity=0.8, total_steps=20, update_interval=2)
        optimizer = KeptOnlyOptimizer(inner, model, max_density=1.0) if wrap else inner
        for step in range(12):
            _step(model, optimizer, step)
            method.step()
            assert_pruned_zero(method, inner)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_state_dict_is_the_wrapped_optimizers():
    model = _masked_model()
    inner = OPTIMIZERS["adam"](model.parameters())
    kept = KeptOnlyOptimizer(inner, model)
    _step(model, kept, 0)
    assert kept.state_dict()["state"].keys() == inner.state_dict()["state"].keys()
    again = KeptOnlyOptimizer(OPTIMIZERS["adam"](model.parameters()), model)
    again.load_state_dict(kept.state_dict())
    assert torch.equal(again.optimizer.state_dict()["state"][0]["exp_avg"], inner.state_dict()["state"][0]["exp_avg"])


def test_dense_layers_are_left_to_the_wrapped_optimizer():
    model = _masked_model()
    kept = KeptOnlyOptimizer(OPTIMIZERS["sgd"](model.parameters()), model, max_density=0.1)  # masks at 0.2
    _step(model, kept, 0)
    assert kept._shadow is None  # nothing sparse enough: the wrapped step did everything


def test_refuses_what_is_not_an_optimizer():
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        KeptOnlyOptimizer(object(), _masked_model())
