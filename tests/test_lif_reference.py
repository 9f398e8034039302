"""The reference implementation against the LIF equations written out for one neuron, and the surrogate
gradients against the derivatives of their primitive functions."""

from __future__ import annotations

import math

import pytest
import torch
from lif_cases import RESETS, SURROGATE_NAMES

from ndsnn.ops import DEFAULT_ALPHA, lif_reference, spike, surrogate_grad


def lif_scalar(xs, tau, v_threshold, v_reset, decay_input):
    """DESIGN.md section 2, one neuron, plain Python floats."""
    charge_reset = 0.0 if v_reset is None else v_reset
    v = charge_reset
    spikes, hs = [], []
    for x in xs:
        h = v + (x - (v - charge_reset)) / tau if decay_input else v - (v - charge_reset) / tau + x
        s = 1.0 if h >= v_threshold else 0.0
        v = (v_reset if s else h) if v_reset is not None else h - v_threshold * s
        spikes.append(s)
        hs.append(h)
    return spikes, hs


@pytest.mark.parametrize("v_reset", RESETS)
@pytest.mark.parametrize("decay_input", [True, False])
def test_reference_follows_equations(v_reset, decay_input):
    x = torch.randn(12, 5, dtype=torch.float64) + 0.7
    spikes, h = lif_reference(x, tau=3.0, v_threshold=0.8, v_reset=v_reset, decay_input=decay_input)
    for n in range(x.shape[1]):
        want_s, want_h = lif_scalar(x[:, n].tolist(), 3.0, 0.8, v_reset, decay_input)
        assert spikes[:, n].tolist() == want_s
        assert h[:, n].tolist() == pytest.approx(want_h, abs=1e-12)


def test_reference_per_channel_equals_per_layer_runs():
    x = torch.randn(6, 2, 3, 4, dtype=torch.float64) + 0.7
    taus, ths = [1.5, 2.0, 4.0], [0.5, 1.0, 1.5]
    spikes, _ = lif_reference(x, tau=torch.tensor(taus, dtype=torch.float64), v_threshold=torch.tensor(ths))
    for c in range(3):
        want, _ = lif_reference(x[:, :, c], tau=taus[c], v_threshold=ths[c])
        assert torch.equal(spikes[:, :, c], want)


def _primitive(name: str, u: torch.Tensor, alpha: float) -> torch.Tensor:
    """The smooth functions whose derivatives the surrogates are (SpikingJelly's primitives)."""
    if name == "atan":
        return torch.atan(math.pi / 2 * alpha * u) / math.pi + 0.5
    if name == "sigmoid":
        return torch.sigmoid(alpha * u)
    if name == "soft_sign":
        return 0.5 * (alpha * u / (1 + (alpha * u).abs()) + 1)
    if name == "triangle":  # PiecewiseQuadratic
        inner = -0.5 * alpha**2 * u.abs() * u + alpha * u + 0.5
        return torch.where(u > 1 / alpha, torch.ones_like(u), torch.where(u < -1 / alpha, torch.zeros_like(u), inner))
    return (alpha * u).clamp(-0.5, 0.5) + 0.5  # rectangle


@pytest.mark.parametrize("name", SURROGATE_NAMES)
@pytest.mark.parametrize("alpha", [None, 0.7, 3.0])
def test_surrogate_is_derivative_of_primitive(name, alpha):
    a = DEFAULT_ALPHA[name] if alpha is None else alpha
    u = torch.linspace(-3, 3, 601, dtype=torch.float64)
    u = u[(u.abs() - 1 / a).abs() > 1e-6]  # skip kinks of the piecewise ones
    u = u[((u.abs() - 0.5 / a).abs() > 1e-6)].requires_grad_()
    (want,) = torch.autograd.grad(_primitive(name, u, a).sum(), u)
    torch.testing.assert_close(surrogate_grad(u.detach(), name, a), want)


@pytest.mark.parametrize("name", SURROGATE_NAMES)
def test_spike_forward_is_heaviside(name):
    u = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0], requires_grad=True)
    s = spike(u, name)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    (g,) = torch.autograd.grad(s.sum(), u)
    torch.testing.assert_close(g, surrogate_grad(u.detach(), name, DEFAULT_ALPHA[name]))


def test_unknown_surrogate_name():
    with pytest.raises(ValueError, match="surrogate must be one of"):
        surrogate_grad(torch.zeros(1), "relu", 1.0)
