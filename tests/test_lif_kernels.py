"""The compiled LIF kernels against the plain-PyTorch reference: forward, every gradient, every option."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import assert_kernels_ran, ops_called, require_kernel
from lif_cases import OPTION_GRID, SHAPES, assert_grads_close, grads, lif_input, make_params

import ndsnn
from ndsnn import _extension
from ndsnn.ops import lif, lif_reference


def _kernels_required(device: torch.device) -> None:
    """The compiled LIF kernels for this device: a failure when they are missing (see kernel_checks)."""
    require_kernel("lif_forward", device)
    require_kernel("lif_backward", device)


def _run_both(x, tau, th, grad_seed, return_h=False, **options):
    """Runs kernel and reference on separate leaf copies; returns outputs and gradients of each."""
    results = []
    for index, fn in enumerate((lambda *a, **k: lif(*a, return_h=True, **k), lif_reference)):
        leaves = [
            t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t
            for t in (x, tau, th)
        ]

        def run(fn=fn, leaves=leaves):
            spikes, h = fn(leaves[0], leaves[1], leaves[2], **options)
            torch.manual_seed(grad_seed)
            g_s = torch.randn_like(spikes)
            outputs, grad_outputs = [spikes], [g_s]
            if return_h:
                outputs.append(h)
                grad_outputs.append(torch.randn_like(h))
            return spikes, h, grads(outputs, leaves, grad_outputs)

        result, called = ops_called(run)
        if index == 0:  # the values compared are the compiled kernels' own
            assert_lif_kernels_ran(called)
        results.append(result)
    return results


def assert_lif_kernels_ran(called: set[str]) -> None:
    """The general LIF kernels, or (CUDA, numbers as tau and threshold) the roofline ones, did the work."""
    if "lif_forward_fast" in called:
        assert_kernels_ran(called, "lif_forward_fast", "lif_backward_fast")
    else:
        assert_kernels_ran(called, "lif_forward", "lif_backward")


def test_kernels_are_loaded():
    """Guards against the suite passing on the reference fallback alone."""
    if _extension.load().messages == ["NDSNN_KERNELS=off"]:
        pytest.skip("NDSNN_KERNELS=off")
    _kernels_required(torch.device("cpu"))


@pytest.mark.parametrize("v_reset,decay_input,detach_reset,surrogate", OPTION_GRID)
@pytest.mark.parametrize("param_kind", ["float", "scalar", "channel"])
def test_matches_reference_fp32(device, v_reset, decay_input, detach_reset, surrogate, param_kind):
    _kernels_required(device)
    options = dict(v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset, surrogate=surrogate)
    for shape in SHAPES:
        x = lif_input(shape, device).requires_grad_()
        tau, th = make_params(param_kind, x)
        (s_k, h_k, g_k), (s_r, h_r, g_r) = _run_both(x, tau, th, grad_seed=1, **options)
        if device.type == "cpu":  # same arithmetic in the same order: bit-identical forward
            assert torch.equal(s_k, s_r) and torch.equal(h_k, h_r)
        else:  # nvcc contracts into FMAs: allow rare flips right at the threshold
            assert (s_k != s_r).float().mean() < 1e-3
            torch.testing.assert_close(h_k, h_r, rtol=1e-5, atol=1e-5)
        assert_grads_close(g_k, g_r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("param_kind", ["float", "channel"])
def test_gradient_of_h_output(device, v_reset, param_kind):
    """return_h: gradients flowing into h itself are added to the spike path."""
    _kernels_required(device)
    x = lif_input((6, 3, 4, 5), device).requires_grad_()
    tau, th = make_params(param_kind, x)
    (s_k, h_k, g_k), (s_r, h_r, g_r) = _run_both(x, tau, th, grad_seed=2, return_h=True, v_reset=v_reset)
    assert_grads_close(g_k, g_r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_half_precision_inputs(device, dtype, v_reset):
    """16-bit inputs compute in float32 like the reference; h is stored in the input dtype."""
    _kernels_required(device)
    x = lif_input((8, 4, 3, 9), device, dtype=dtype).requires_grad_()
    tau, th = make_params("channel", x)
    (s_k, h_k, g_k), (s_r, h_r, g_r) = _run_both(x, tau, th, grad_seed=3, v_reset=v_reset)
    assert s_k.dtype == dtype and h_k.dtype == dtype
    assert (s_k != s_r).float().mean() < 1e-3
    th_b = th.detach().reshape(1, 1, -1, 1)
    assert torch.equal(h_k.float() >= th_b, s_k.bool()), "stored h must reproduce the spikes"
    torch.testing.assert_close(h_k.float(), h_r.float(), rtol=1e-2, atol=1e-2)
    assert_grads_close(g_k, g_r, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("saved_dtype", [torch.float16, torch.bfloat16])
def test_compact_saved_h(device, saved_dtype):
    """float32 input with h kept in 16 bits: same spikes, half the saved bytes, close gradients."""
    _kernels_required(device)
    x = lif_input((8, 4, 3, 9), device).requires_grad_()
    tau, th = make_params("channel", x)
    (s_c, h_c, g_c), (s_r, h_r, g_r) = _run_both(x, tau, th, grad_seed=4, saved_dtype=saved_dtype)
    assert torch.equal(s_c, s_r)
    assert h_c.dtype == saved_dtype and h_c.element_size() * 2 == x.element_size()
    assert torch.equal(h_c.float() >= th.detach().reshape(1, 1, -1, 1), s_c.bool())
    # bfloat16 keeps 8 mantissa bits: the leak gradient, built from h_t - v_{t-1}, loses the most.
    tolerances = (2e-3, 2e-3, 2e-3) if saved_dtype == torch.float16 else (1e-2, 6e-2, 6e-2)
    for got, want, tol in zip(g_c, g_r, tolerances, strict=True):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_spike_consistent_rounding(device):
    """h just below the threshold must not round up to it in 16-bit storage, and vice versa."""
    _kernels_required(device)
    below = 1.0 - 2.0**-20
    x = torch.tensor([[below, 1.0, -below, 0.5]], device=device).reshape(1, 1, 4)
    spikes, h = lif(x, tau=2.0, decay_input=False, v_reset=0.0, return_h=True, saved_dtype=torch.bfloat16)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]
    assert h[0, 0, 0].item() < 1.0 and h[0, 0, 1].item() == 1.0
    assert torch.equal(h.float() >= 1.0, spikes.bool())


def test_non_contiguous_and_empty(device):
    _kernels_required(device)
    base = lif_input((5, 6, 4, 3), device)
    x = base.transpose(1, 3)[:, ::2]  # strided view
    assert not x.is_contiguous()
    s_k, h_k = lif(x, return_h=True)
    s_r, h_r = lif_reference(x)
    assert torch.equal(s_k, s_r) if device.type == "cpu" else torch.allclose(s_k, s_r)
    for shape in ((4, 0, 3), (0, 2, 3), (1, 0)):
        empty = torch.zeros(shape, device=device, requires_grad=True)
        tau, th = make_params("scalar", empty) if len(shape) < 3 else make_params("channel", empty)
        spikes = lif(empty, tau=tau, v_threshold=th)
        assert spikes.shape == empty.shape
        g_x, g_tau, g_th = torch.autograd.grad(spikes.sum(), (empty, tau, th))
        assert g_x.shape == empty.shape and torch.count_nonzero(g_tau) == 0 and g_th.shape == th.shape


def test_single_step_and_long_sequence(device):
    _kernels_required(device)
    for steps in (1, 64):
        x = lif_input((steps, 3, 17), device).requires_grad_()
        (s_k, h_k, g_k), (s_r, h_r, g_r) = _run_both(x, 2.0, 1.0, grad_seed=5)
        torch.testing.assert_close(s_k, s_r)
        torch.testing.assert_close(g_k[0], g_r[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("param_kind", ["scalar", "channel"])
def test_gradcheck(device, v_reset, decay_input, param_kind):
    """Exact derivative of h (detach_reset: the reset is piecewise linear in h) by finite differences."""
    _kernels_required(device)
    x = lif_input((5, 2, 3, 2), device, dtype=torch.float64).requires_grad_()
    tau, th = make_params(param_kind, x)

    def h_of(x, tau, th):
        return lif(x, tau, th, v_reset=v_reset, decay_input=decay_input, detach_reset=True, return_h=True)[1]

    assert torch.autograd.gradcheck(h_of, (x, tau, th), eps=1e-6, atol=1e-6)


def _opcheck_samples(device):
    x = lif_input((4, 2, 3, 5), device)
    tau = torch.tensor([1.5, 2.0, 3.0], device=device, requires_grad=True)
    th = torch.tensor(0.9, device=device, requires_grad=True)
    return [
        (x.clone().requires_grad_(), None, None, 2.0, 1.0, 0.0, True, False, "atan", 2.0, None),
        (x.clone().requires_grad_(), tau, th, 0.0, 0.0, None, False, True, "sigmoid", 4.0, None),
        (x.clone().requires_grad_(), tau, None, 0.0, 1.0, -0.1, True, False, "triangle", 1.0, torch.float16),
        (x.double().requires_grad_(), None, th.double(), 3.0, 0.0, 0.0, True, False, "soft_sign", 2.0, None),
    ]


def test_opcheck(device):
    _kernels_required(device)
    for args in _opcheck_samples(device):
        torch.library.opcheck(torch.ops.ndsnn.lif_forward.default, args)
    x = lif_input((3, 2, 4), device)
    spikes, h = torch.ops.ndsnn.lif_forward(x, None, None, 2.0, 1.0, 0.0, True, False, "atan", 2.0, None)
    tau = torch.tensor([1.5, 2.0], device=device).repeat(2)
    backward_args = (
        torch.randn_like(spikes),
        torch.randn_like(h),
        h,
        tau,
        None,
        0.0,
        1.0,
        0.0,
        True,
        False,
        "atan",
        2.0,
        True,
        False,
    )
    torch.library.opcheck(torch.ops.ndsnn.lif_backward.default, backward_args)


def test_torch_compile(device):
    _kernels_required(device)
    layer = ndsnn.nn.LIF(learnable_threshold=True, num_channels=3).to(device)
    x = lif_input((4, 2, 3, 5), device).requires_grad_()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.sum().backward()
    want = layer(x.detach().requires_grad_())
    assert torch.equal(out, want)
    assert layer.threshold.grad is not None and x.grad is not None


def test_double_backward_is_refused(device):
    """Differentiating the gradient must fail loudly, not return None or zeros."""
    _kernels_required(device)
    x = lif_input((4, 2, 3), device).requires_grad_()
    _, h = lif(x, return_h=True, detach_reset=True)
    (g,) = torch.autograd.grad(h.pow(2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(g.sum(), x)


@pytest.mark.parametrize("saved_dtype", [torch.float16, torch.bfloat16])
def test_spike_consistent_rounding_sweep(device, saved_dtype):
    """Thresholds that are positive, zero, negative and not representable in 16 bits, per channel, with h
    placed within a few float32 ulps of them: stored h always reproduces the spikes."""
    _kernels_required(device)
    thresholds = torch.tensor([1.0, 0.0, -0.7, 0.3, 1e-6], device=device)
    ulps = torch.arange(-40, 41, device=device, dtype=torch.float32)
    near = (
        thresholds[:, None]
        + ulps[None, :] * torch.finfo(torch.float32).eps * thresholds.abs().clamp_min(1e-30)[:, None]
    )
    x = near.T.reshape(1, ulps.numel(), thresholds.numel()).contiguous()  # T=1, decay_input=False: h = x
    spikes, h = lif(x, v_threshold=thresholds, decay_input=False, return_h=True, saved_dtype=saved_dtype)
    assert torch.equal(spikes.bool(), x >= thresholds)
    assert torch.equal(h.float() >= thresholds, spikes.bool())
    _, h_ref = lif_reference(x, v_threshold=thresholds, decay_input=False, saved_dtype=saved_dtype)
    assert torch.equal(h_ref.float() >= thresholds, spikes.bool())


def test_non_contiguous_gradients_per_channel(device):
    _kernels_required(device)
    base = lif_input((5, 4, 6, 3), device)
    x = base.permute(0, 1, 3, 2)  # [T, N, C=3, 6], non-contiguous
    tau, th = make_params("channel", x)
    (s_k, h_k, g_k), (s_r, h_r, g_r) = _run_both(x.requires_grad_(), tau, th, grad_seed=6)
    assert torch.equal(h_k, h_r) if device.type == "cpu" else torch.allclose(h_k, h_r)
    assert_grads_close(g_k, g_r, rtol=1e-4, atol=1e-5)


def test_parameter_grads_keep_parameter_dtype(device):
    _kernels_required(device)
    x = lif_input((4, 2, 3, 5), device, dtype=torch.bfloat16).requires_grad_()
    tau = torch.full((3,), 2.0, device=device, dtype=torch.float64, requires_grad=True)
    th = torch.tensor(1.0, device=device, dtype=torch.float16, requires_grad=True)
    lif(x, tau, th).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and tau.grad.dtype == torch.float64 and th.grad.dtype == torch.float16


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("saved_dtype", [None, torch.float16])
@pytest.mark.parametrize("v_reset,detach_reset", [(0.0, True), (None, False), (-0.3, False)])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "triangle", "rectangle", "soft_sign"])
def test_roofline_kernels_equal_the_general_ones(dtype, saved_dtype, v_reset, detach_reset, surrogate):
    """lif_*_fast (numbers as tau and threshold, vector loads, time in chunks) computes what lif_* computes,
    over step counts that end mid-chunk and neuron counts with and without the 4-wide path."""
    device = torch.device("cuda")
    for op in ("lif_forward_fast", "lif_backward_fast"):
        require_kernel(op, device)
    if saved_dtype is not None and dtype != torch.float32:
        pytest.skip("a 16-bit saved h is for float32 input")
    for shape in ((1, 4, 8), (7, 3, 5, 6), (9, 2, 64), (16, 5, 12), (17, 1, 3)):
        x = (torch.randn(shape, device=device) * 1.5 + 0.6).to(dtype)
        args = (None, None, 4.0 / 3.0, 1.0, v_reset, True, detach_reset, surrogate, 2.0, saved_dtype)
        spikes_f, h_f = torch.ops.ndsnn.lif_forward_fast(x, *args)
        spikes_g, h_g = torch.ops.ndsnn.lif_forward(x, *args)
        assert torch.equal(spikes_f, spikes_g) and torch.equal(h_f, h_g), shape
        grad = torch.randn(shape, device=device).to(dtype)
        grad_h = torch.randn(shape, device=device).to(h_g.dtype)
        backward = (None, None, 4.0 / 3.0, 1.0, v_reset, True, detach_reset, surrogate, 2.0, False, False)
        for gh in (None, grad_h):
            fast = torch.ops.ndsnn.lif_backward_fast(grad, gh, h_f, *backward)[0]
            general = torch.ops.ndsnn.lif_backward(grad, gh, h_g, *backward)[0]
            torch.testing.assert_close(fast, general, rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_the_op_picks_the_roofline_kernels_where_they_apply():
    device = torch.device("cuda")
    x = torch.randn(4, 3, 8, device=device, requires_grad=True)
    _, called = ops_called(lambda: lif(x, tau=2.0, v_threshold=1.0).sum().backward())
    assert {"lif_forward_fast", "lif_backward_fast"} <= called
    tau = torch.tensor(2.0, device=device)
    _, called = ops_called(lambda: lif(x, tau=tau).sum().backward())
    assert {"lif_forward", "lif_backward"} <= called and "lif_forward_fast" not in called
    _, called = ops_called(lambda: lif(x.double(), tau=2.0).sum().backward())
    assert "lif_forward" in called and "lif_forward_fast" not in called
