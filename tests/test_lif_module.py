"""ndsnn.nn.LIF: the module around the op, learnable threshold and leak, state_dict, stored h."""

from __future__ import annotations

import pytest
import torch
from lif_cases import lif_input

import ndsnn


def test_module_equals_op(device):
    x = lif_input((5, 2, 3, 4), device)
    layer = ndsnn.nn.LIF(tau=3.0, v_threshold=0.7, v_reset=None, surrogate="sigmoid")
    assert torch.equal(layer(x), ndsnn.ops.lif(x, tau=3.0, v_threshold=0.7, v_reset=None, surrogate="sigmoid"))


@pytest.mark.parametrize("num_channels", [None, 3])
def test_learnable_parameters_receive_gradients(device, num_channels):
    layer = ndsnn.nn.LIF(learnable_threshold=True, learnable_tau=True, num_channels=num_channels).to(device)
    x = lif_input((6, 2, 3, 4), device)
    layer(x).sum().backward()
    shape = (num_channels,) if num_channels else ()
    for p in (layer.threshold, layer.tau_logit):
        assert p.shape == shape and p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.tau.detach().clone()
    optimizer.step()
    assert not torch.equal(before, layer.tau.detach()) and bool((layer.tau > 1).all())


def test_learned_tau_stays_valid_when_saturated():
    layer = ndsnn.nn.LIF(learnable_tau=True)
    with torch.no_grad():
        layer.tau_logit.fill_(40.0)  # sigmoid(w) rounds to 1 in float32: tau would be exactly 1
    assert float(layer.tau.detach()) > 1.0
    layer(lif_input((3, 2, 4), "cpu"))


def test_learned_tau_valid_in_half_precision_module():
    layer = ndsnn.nn.LIF(learnable_tau=True).to(torch.bfloat16)
    with torch.no_grad():
        layer.tau_logit.fill_(40.0)
    assert float(layer.tau.detach()) > 1.0
    layer(lif_input((3, 2, 4), "cpu", dtype=torch.bfloat16))


def test_per_channel_fixed_values_are_buffers():
    layer = ndsnn.nn.LIF(tau=4.0, v_threshold=0.5, num_channels=3)
    state = layer.state_dict()
    assert set(state) == {"tau_values", "threshold_values"}
    assert list(layer.parameters()) == []
    x = lif_input((4, 2, 3, 5), "cpu")
    assert torch.equal(layer(x), ndsnn.ops.lif(x, tau=4.0, v_threshold=0.5))


def test_state_dict_round_trip():
    source = ndsnn.nn.LIF(learnable_threshold=True, learnable_tau=True, num_channels=3)
    with torch.no_grad():
        source.threshold.copy_(torch.tensor([0.5, 1.0, 1.5]))
        source.tau_logit.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    target = ndsnn.nn.LIF(learnable_threshold=True, learnable_tau=True, num_channels=3)
    target.load_state_dict(source.state_dict())
    x = lif_input((4, 2, 3, 5), "cpu")
    assert torch.equal(source(x), target(x))


def test_store_h_keeps_membrane_before_reset():
    layer = ndsnn.nn.LIF(store_h=True)
    x = lif_input((4, 2, 5), "cpu")
    spikes = layer(x)
    assert layer.last_h is not None and not layer.last_h.requires_grad
    assert torch.equal(layer.last_h >= 1.0, spikes.bool())
    assert ndsnn.nn.LIF()(x) is not None and ndsnn.nn.LIF().last_h is None


def test_repr_names_options():
    text = repr(ndsnn.nn.LIF(learnable_tau=True, num_channels=8, v_reset=None))
    assert "tau=learnable" in text and "num_channels=8" in text and "v_reset=None" in text
