"""ndsnn.nn.LIF against SpikingJelly 2.0's LIFNode / ParametricLIFNode (multi-step) for the shared options."""

from __future__ import annotations

import pytest
import torch
from lif_cases import RESETS, lif_input

import ndsnn

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

pytestmark = pytest.mark.peers

SJ_SURROGATES = {
    "atan": lambda a: sj_surrogate.ATan(alpha=a),
    "sigmoid": lambda a: sj_surrogate.Sigmoid(alpha=a),
    "triangle": lambda a: sj_surrogate.PiecewiseQuadratic(alpha=a),
    "rectangle": lambda a: sj_surrogate.Rect(alpha=a),
    "soft_sign": lambda a: sj_surrogate.SoftSign(alpha=a),
}


def _compare(ours, theirs, x, param_pairs=()):
    x_ours = x.clone().requires_grad_()
    x_theirs = x.clone().requires_grad_()
    s_ours, s_theirs = ours(x_ours), theirs(x_theirs)
    assert torch.equal(s_ours, s_theirs)
    g = torch.randn_like(s_ours)
    s_ours.backward(g)
    s_theirs.backward(g)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-6)
    for p_ours, p_theirs in param_pairs:
        torch.testing.assert_close(p_ours.grad, p_theirs.grad.reshape(p_ours.grad.shape), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("v_reset", RESETS)
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", list(SJ_SURROGATES))
def test_lif_matches_spikingjelly(v_reset, decay_input, detach_reset, surrogate):
    alpha = ndsnn.ops.DEFAULT_ALPHA[surrogate] * 1.5
    options = dict(v_threshold=0.9, v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset)
    ours = ndsnn.nn.LIF(tau=2.5, surrogate=surrogate, alpha=alpha, **options)
    theirs = sj_neuron.LIFNode(tau=2.5, surrogate_function=SJ_SURROGATES[surrogate](alpha), step_mode="m", **options)
    _compare(ours, theirs, lif_input((8, 4, 3, 5, 5), "cpu"))


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("decay_input", [True, False])
def test_learnable_tau_matches_parametric_lif(v_reset, decay_input):
    options = dict(v_threshold=1.0, v_reset=v_reset, decay_input=decay_input)
    ours = ndsnn.nn.LIF(tau=3.0, learnable_tau=True, **options)
    theirs = sj_neuron.ParametricLIFNode(init_tau=3.0, surrogate_function=sj_surrogate.ATan(), step_mode="m", **options)
    _compare(ours, theirs, lif_input((6, 4, 8), "cpu"), [(ours.tau_logit, theirs.w)])
