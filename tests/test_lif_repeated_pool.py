"""The stem's LIF fused with max pooling (ndsnn.ops.lif_repeated_max_pool) against the plain-PyTorch reference:
lif_reference on the expanded frame, then F.max_pool2d per step. Pooled spikes, the number fired, and the
gradients of the current and of tau / v_threshold, for every option, window and edge of the frame, with the
compiled kernel shown to have produced them (on CUDA, where it has no kernel yet, the unfused ops serve)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_kernels_ran, ops_called, require_kernel
from lif_cases import OPTION_GRID, frame_params, fresh_leaves, grads, lif_input

import ndsnn
from ndsnn import _extension
from ndsnn.models import SpikingConvNet, per_step_cross_entropy
from ndsnn.nn import lif_pool_fusion
from ndsnn.ops import lif_reference, lif_repeated, lif_repeated_max_pool

OPS = ("lif_repeated_max_pool_forward", "lif_repeated_max_pool_backward")


def _fused_kernel(device: torch.device) -> bool:
    return _extension.has_kernel(OPS[0], device.type)


def _require(device: torch.device) -> None:
    if device.type == "cpu":
        for op in OPS:
            require_kernel(op, device)
    else:
        require_kernel("lif_forward", device)


def _assert_ran(called: set[str], device: torch.device) -> None:
    if _fused_kernel(device):
        assert_kernels_ran(called, *OPS)
    else:  # the fallback: the LIF kernels, then max pooling
        assert called & {"lif_forward", "lif_forward_fast", "lif_repeated_forward"}, f"no LIF kernel: {sorted(called)}"


def reference(current, steps, window, tau, v_threshold, **options):
    """Pooled spikes and spike count of the plain-PyTorch reference."""
    spikes, _ = lif_reference(current.expand(steps, *current.shape), tau, v_threshold, **options)
    pooled = F.max_pool2d(spikes.flatten(0, 1), window).unflatten(0, spikes.shape[:2])
    return pooled, spikes.detach().sum()


def _compare(current, steps, window, kind, rtol=1e-5, atol=1e-6, **options):
    tau, th = frame_params(kind, current)
    got_leaves, want_leaves = fresh_leaves(current, tau, th), fresh_leaves(current, tau, th)
    shape = (steps, current.shape[0], current.shape[1], current.shape[2] // window, current.shape[3] // window)
    grad_pooled = torch.randn(shape, dtype=current.dtype, device=current.device)

    def run():
        pooled, fired = lif_repeated_max_pool(got_leaves[0], steps, window, got_leaves[1], got_leaves[2], **options)
        return pooled, fired, grads([pooled], got_leaves, [grad_pooled])

    (pooled, fired, got), called = ops_called(run)
    _assert_ran(called, current.device)
    want_pooled, want_fired = reference(want_leaves[0], steps, window, want_leaves[1], want_leaves[2], **options)
    want = grads([want_pooled], want_leaves, [grad_pooled])
    assert pooled.shape == shape and pooled.dtype == current.dtype
    torch.testing.assert_close(pooled, want_pooled, rtol=0, atol=0)
    assert fired.dtype == torch.int64 and fired.item() == int(want_fired.item())
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("v_reset,decay_input,detach_reset,surrogate", OPTION_GRID)
@pytest.mark.parametrize("kind", ["float", "scalar", "channel"])
def test_matches_reference_every_option(device, v_reset, decay_input, detach_reset, surrogate, kind):
    _require(device)
    current = lif_input((3, 4, 6, 5), device, dtype=torch.float64).requires_grad_()
    _compare(current, 5, 2, kind, rtol=1e-9, atol=1e-10, v_reset=v_reset, decay_input=decay_input,
             detach_reset=detach_reset, surrogate=surrogate)  # fmt: skip


@pytest.mark.parametrize(
    "shape,window",
    [
        ((2, 3, 7, 9), 2),  # a row and a column the pooling drops
        ((2, 2, 11, 13), 3),  # the generic window path, with dropped rows and columns
        ((1, 2, 9, 8), 4),
        ((2, 3, 5, 6), 1),
        ((1, 2, 50, 66), 2),  # several work groups per plane, blocks across rows
        ((1, 1, 5, 700), 2),  # a pooling row wider than a work group and than a block
        ((1, 1, 2, 2), 2),  # one window
        ((3, 1, 16, 16), 16),  # the largest window
    ],
)
@pytest.mark.parametrize("kind", ["scalar", "channel"])
def test_windows_and_frame_edges(device, shape, window, kind):
    _require(device)
    current = lif_input(shape, device, dtype=torch.float64).requires_grad_()
    _compare(current, 3, window, kind, rtol=1e-9, atol=1e-10, v_reset=0.0, detach_reset=True)


@pytest.mark.parametrize("steps", [1, 4, 33])
def test_float32_steps(device, steps):
    _require(device)
    current = lif_input((4, 3, 10, 12), device).requires_grad_()
    _compare(current, steps, 2, "channel", rtol=1e-4, atol=1e-5, detach_reset=True)


@pytest.mark.parametrize("fill", [-5.0, 50.0])
def test_silent_and_saturated_windows_route_to_the_first_place(device, fill):
    """Windows whose neurons all stay silent or all fire: max_pool2d's rule sends the gradient to the window's
    first neuron, which is then the only one with a gradient."""
    _require(device)
    current = torch.full((2, 3, 4, 6), fill, dtype=torch.float64, device=device, requires_grad=True)
    _compare(current, 4, 2, "float", rtol=1e-9, atol=1e-10, v_reset=0.0)
    pooled, _ = lif_repeated_max_pool(current, 4, 2, 1.6, 0.9)
    pooled.sum().backward()
    firsts = torch.zeros(4, 6, dtype=torch.bool, device=device)
    firsts[::2, ::2] = True
    assert (current.grad[..., ~firsts] == 0).all()
    if fill > 0:  # saturated: the surrogate is tiny but not zero at the first places
        assert (current.grad[..., firsts] != 0).all()


def test_non_contiguous_current(device):
    _require(device)
    current = lif_input((6, 4, 3, 8), device, dtype=torch.float64).transpose(2, 3).requires_grad_()
    assert not current.is_contiguous()
    _compare(current, 4, 2, "channel", rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_matches_the_unfused_ops(device, dtype):
    """16-bit currents: the same pooled spikes and (to 16-bit rounding) gradients as lif_repeated and pooling."""
    _require(device)
    current = lif_input((4, 3, 6, 8), device, dtype=dtype)
    a, b = current.clone().requires_grad_(), current.clone().requires_grad_()
    grad_pooled = torch.randn((4, 4, 3, 3, 4), device=device).to(dtype)
    got, fired = lif_repeated_max_pool(a, 4, 2, 1.5, 1.0, detach_reset=True)
    spikes = lif_repeated(b, 4, 1.5, 1.0, detach_reset=True)
    want = F.max_pool2d(spikes.flatten(0, 1), 2).unflatten(0, spikes.shape[:2])
    got.backward(grad_pooled)
    want.backward(grad_pooled)
    assert got.dtype == dtype and torch.equal(got, want) and fired.item() == int(spikes.float().sum().item())
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=2e-2, atol=2e-2)


def test_empty_batch(device):
    _require(device)
    empty = torch.zeros((0, 3, 4, 4), device=device, requires_grad=True)
    pooled, fired = lif_repeated_max_pool(empty, 4, 2)
    pooled.sum().backward()
    assert pooled.shape == (4, 0, 3, 2, 2) and fired.item() == 0 and empty.grad.shape == empty.shape


def test_bad_arguments_name_themselves():
    current = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"window must be an int in \[1, 16\]"):
        lif_repeated_max_pool(current, 4, 0)
    with pytest.raises(ValueError, match=r"window must be an int in \[1, 16\]"):
        lif_repeated_max_pool(current, 4, True)
    with pytest.raises(ValueError, match="does not fit the frame"):
        lif_repeated_max_pool(current, 4, 5)
    with pytest.raises(ValueError, match=r"current must be a tensor of shape \[N, C, H, W\]"):
        lif_repeated_max_pool(torch.randn(2, 3, 4), 4, 2)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        lif_repeated_max_pool(current, 0, 2)
    with pytest.raises(ValueError, match="tau must be > 1"):
        lif_repeated_max_pool(current, 2, 2, tau=0.5)


def test_opcheck(device):
    _require(device)
    if not _fused_kernel(device):
        pytest.skip(f"lif_repeated_max_pool has no {device.type} kernel (the unfused ops run there)")
    current = lif_input((2, 3, 5, 6), device).requires_grad_()
    tau = torch.tensor([1.5, 2.0, 3.0], device=device, requires_grad=True)
    th = torch.tensor(0.9, device=device, requires_grad=True)
    samples = [
        (current, 4, 2, None, None, 2.0, 1.0, 0.0, True, False, "atan", 2.0),
        (current, 3, 3, tau, th, 0.0, 0.0, None, False, True, "sigmoid", 4.0),
        (current.double(), 2, 1, None, th.double(), 3.0, 0.0, -0.2, True, False, "soft_sign", 2.0),
    ]
    for args in samples:
        torch.library.opcheck(torch.ops.ndsnn.lif_repeated_max_pool_forward.default, args)
    grad_pooled = torch.randn(4, 2, 3, 2, 3, device=device)
    backward = (grad_pooled, current.detach(), 2, tau.detach(), None, 0.0, 1.0, 0.0, True, False, "atan", 2.0,
                True, False)  # fmt: skip
    torch.library.opcheck(torch.ops.ndsnn.lif_repeated_max_pool_backward.default, backward)


def test_double_backward_is_refused(device):
    _require(device)
    if not _fused_kernel(device):
        pytest.skip(f"lif_repeated_max_pool has no {device.type} kernel")
    current = lif_input((2, 3, 4, 4), device).requires_grad_()
    (g,) = torch.autograd.grad(lif_repeated_max_pool(current, 3, 2).spikes.sum(), current, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(g.sum(), current)


def _convnet_step(model, images, labels, fused: bool):
    model.zero_grad(set_to_none=True)
    with lif_pool_fusion(fused):
        (logits, called) = ops_called(lambda: model(images))
        per_step_cross_entropy(logits, labels).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, called


def test_convnet_fused_stem_equals_the_unfused_layers(device):
    """The convnet's stem neurons and first pooling run fused, with outputs, gradients and firing rates
    identical to the layers run apart."""
    _require(device)
    torch.manual_seed(0)
    model = SpikingConvNet(10, 1, 4, 28).to(device)
    images, labels = torch.rand(8, 1, 28, 28, device=device), torch.randint(0, 10, (8,), device=device)
    rates = []
    handle = model.stem_lif.observe_firing_rate(lambda module, rate: rates.append(float(rate)))
    fused_logits, fused_grads, fused_called = _convnet_step(model, images, labels, fused=True)
    plain_logits, plain_grads, plain_called = _convnet_step(model, images, labels, fused=False)
    handle.remove()
    if _fused_kernel(device):
        assert OPS[0] in fused_called and OPS[0] not in plain_called
    assert torch.equal(fused_logits, plain_logits)
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=0, atol=0, msg=name)
    assert len(rates) == 2 and rates[0] == pytest.approx(rates[1], rel=1e-6) and 0 < rates[0] < 1


def test_spike_observers_and_hooks_turn_the_fusion_off(device):
    """An observer of the full spikes, or a forward hook on the neurons or the pooling, gets the full spikes:
    the stem then runs unfused."""
    _require(device)
    if not _fused_kernel(device):
        pytest.skip(f"lif_repeated_max_pool has no {device.type} kernel")
    model = SpikingConvNet(10, 1, 4, 16).to(device)
    images = torch.rand(2, 1, 16, 16, device=device)
    _, called = ops_called(lambda: model(images))
    assert OPS[0] in called
    seen = []
    for attach in (
        lambda: model.stem_lif.observe_spikes(lambda module, spikes: seen.append(spikes.shape)),
        lambda: model.stem_lif.register_forward_hook(lambda module, args, out: seen.append(out.shape)),
        lambda: model.pool1.register_forward_hook(lambda module, args, out: seen.append(args[0].shape)),
        lambda: model.pool1.module.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape)),
    ):
        handle = attach()
        _, called = ops_called(lambda: model(images))
        handle.remove()
        assert OPS[0] not in called
        assert seen.pop() in {(4, 2, 32, 16, 16), (8, 32, 16, 16)}


def test_torch_compile_fullgraph(device):
    _require(device)
    torch.manual_seed(0)
    model = SpikingConvNet(10, 1, 4, 16).to(device)
    images = torch.rand(4, 1, 16, 16, device=device)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(images)
    out.sum().backward()
    assert torch.equal(out.detach(), model(images).detach())
    assert model.stem[0].module.weight.grad is not None


def test_module_in_ndsnn_namespace():
    assert ndsnn.ops.lif_repeated_max_pool is lif_repeated_max_pool
