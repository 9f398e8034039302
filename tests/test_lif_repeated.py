"""The LIF op for a constant input current (ndsnn.ops.lif_repeated) against the reference on the expanded
input: spikes, the current's gradient and the parameter gradients, every option, with the compiled kernel
shown to have produced the values (on CUDA, where it has no kernel yet, the general LIF kernels serve)."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import assert_kernels_ran, ops_called, require_kernel
from lif_cases import OPTION_GRID, frame_params, fresh_leaves, grads, lif_input

import ndsnn
from ndsnn import _extension
from ndsnn.ops import lif, lif_reference, lif_repeated


def _require(device: torch.device) -> None:
    if device.type == "cpu":
        require_kernel("lif_repeated_forward", device)
        require_kernel("lif_repeated_backward", device)
    else:
        require_kernel("lif_forward", device)


def _assert_ran(called: set[str], device: torch.device) -> None:
    if device.type == "cpu":
        assert_kernels_ran(called, "lif_repeated_forward", "lif_repeated_backward")
    else:  # the fallback: the general kernels on the expanded frame
        assert called & {"lif_forward", "lif_forward_fast"}, f"no LIF kernel ran: {sorted(called)}"


def _compare(current, steps, kind, rtol=1e-5, atol=1e-6, **options):
    """Runs lif_repeated and the reference on the expanded frame; asserts spikes and gradients agree."""
    tau, th = frame_params(kind, current)
    got_leaves, want_leaves = fresh_leaves(current, tau, th), fresh_leaves(current, tau, th)
    grad_spikes = torch.randn((steps, *current.shape), dtype=current.dtype, device=current.device)

    def run():
        spikes = lif_repeated(got_leaves[0], steps, got_leaves[1], got_leaves[2], **options)
        return spikes, grads([spikes], got_leaves, [grad_spikes])

    (spikes, got), called = ops_called(run)
    _assert_ran(called, current.device)
    x = want_leaves[0]
    want_spikes, _ = lif_reference(x.expand(steps, *x.shape), want_leaves[1], want_leaves[2], **options)
    want = grads([want_spikes], want_leaves, [grad_spikes])
    assert spikes.shape == (steps, *current.shape)
    torch.testing.assert_close(spikes, want_spikes, rtol=0, atol=0)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("v_reset,decay_input,detach_reset,surrogate", OPTION_GRID)
@pytest.mark.parametrize("kind", ["float", "scalar", "channel"])
def test_matches_reference_every_option(device, v_reset, decay_input, detach_reset, surrogate, kind):
    _require(device)
    current = lif_input((3, 4, 5, 2), device, dtype=torch.float64).requires_grad_()
    _compare(current, 5, kind, rtol=1e-9, atol=1e-10, v_reset=v_reset, decay_input=decay_input,
             detach_reset=detach_reset, surrogate=surrogate)  # fmt: skip


@pytest.mark.parametrize("shape", [(7,), (2, 3), (5, 3, 9, 11), (1, 1, 1, 1), (300, 1)])
@pytest.mark.parametrize("steps", [1, 4, 33])
def test_float32_shapes_and_steps(device, shape, steps):
    """Blocks that end mid-way, one neuron, one step and long sequences, in float32."""
    _require(device)
    current = lif_input(shape, device).requires_grad_()
    _compare(current, steps, "channel" if len(shape) > 1 else "scalar", rtol=1e-4, atol=1e-5, detach_reset=True)


def test_non_contiguous_current(device):
    _require(device)
    current = lif_input((6, 4, 5), device).transpose(0, 2).requires_grad_()
    assert not current.is_contiguous()
    _compare(current, 4, "channel", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_matches_the_general_kernel(device, dtype):
    """16-bit currents: the same spikes and (to 16-bit rounding) gradients as lif on the expanded frame."""
    _require(device)
    current = lif_input((4, 3, 6, 5), device, dtype=dtype)
    a, b = current.clone().requires_grad_(), current.clone().requires_grad_()
    grad_spikes = torch.randn((4, *current.shape), device=device).to(dtype)
    got = lif_repeated(a, 4, 1.5, 1.0, detach_reset=True)
    want = lif(b.expand(4, *b.shape), 1.5, 1.0, detach_reset=True)
    got.backward(grad_spikes)
    want.backward(grad_spikes)
    assert got.dtype == dtype and torch.equal(got, want)
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=2e-2, atol=2e-2)


def test_empty_batch_and_all_silent(device):
    _require(device)
    empty = torch.zeros((0, 3, 2), device=device, requires_grad=True)
    spikes = lif_repeated(empty, 4)
    spikes.sum().backward()
    assert spikes.shape == (4, 0, 3, 2) and empty.grad.shape == empty.shape
    silent = torch.full((2, 3), -5.0, device=device, requires_grad=True)
    out = lif_repeated(silent, 3)
    out.backward(torch.ones_like(out))
    assert not out.any() and torch.isfinite(silent.grad).all()


def test_bad_arguments_name_themselves():
    current = torch.randn(2, 3)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        lif_repeated(current, 0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        lif_repeated(current, True)
    with pytest.raises(ValueError, match=r"current must be a tensor of shape \[N, \.\.\.\]"):
        lif_repeated(torch.tensor(1.0), 2)
    with pytest.raises(ValueError, match="tau must be > 1"):
        lif_repeated(current, 2, tau=0.5)


def test_opcheck(device):
    _require(device)
    if not _extension.has_kernel("lif_repeated_forward", device.type):
        pytest.skip(f"lif_repeated has no {device.type} kernel (the op runs lif on the expanded frame there)")
    current = lif_input((2, 3, 4), device).requires_grad_()
    tau = torch.tensor([1.5, 2.0, 3.0], device=device, requires_grad=True)
    th = torch.tensor(0.9, device=device, requires_grad=True)
    samples = [
        (current, 4, None, None, 2.0, 1.0, 0.0, True, False, "atan", 2.0),
        (current, 3, tau, th, 0.0, 0.0, None, False, True, "sigmoid", 4.0),
        (current.double(), 2, None, th.double(), 3.0, 0.0, -0.2, True, False, "soft_sign", 2.0),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.ndsnn.lif_repeated_forward.default, args)
    grad_spikes = torch.randn(4, 2, 3, 4, device=device)
    backward = (grad_spikes, current.detach(), tau.detach(), None, 0.0, 1.0, 0.0, True, False, "atan", 2.0, True,
                False)  # fmt: skip
    torch.library.opcheck(torch.ops.ndsnn.lif_repeated_backward.default, backward)


def test_module_steps_argument(device):
    """LIF(current, steps=T) equals LIF on T copies; with store_h it keeps h (through the general op)."""
    _require(device)
    layer = ndsnn.nn.LIF(tau=1.5, learnable_threshold=True, num_channels=3).to(device)
    current = lif_input((2, 3, 4), device).requires_grad_()
    got = layer(current, steps=4)
    assert layer.last_h is None
    want = layer(current.expand(4, *current.shape))
    assert torch.equal(got, want)
    layer.store_h = True
    layer(current, steps=4)
    assert layer.last_h is not None and layer.last_h.shape == (4, 2, 3, 4)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        layer(current, steps=0)


def test_torch_compile_fullgraph(device):
    _require(device)
    layer = ndsnn.nn.LIF(learnable_threshold=True, num_channels=3).to(device)
    current = lif_input((2, 3, 5), device).requires_grad_()
    compiled = torch.compile(lambda c: layer(c, steps=4), backend="aot_eager", fullgraph=True)
    out = compiled(current)
    out.sum().backward()
    assert torch.equal(out, layer(current.detach(), steps=4))
    assert layer.threshold.grad is not None and current.grad is not None


def test_double_backward_is_refused(device):
    _require(device)
    if not _extension.has_kernel("lif_repeated_forward", device.type):
        pytest.skip(f"lif_repeated has no {device.type} kernel")
    current = lif_input((2, 3), device).requires_grad_()
    (g,) = torch.autograd.grad(lif_repeated(current, 3).sum(), current, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(g.sum(), current)
