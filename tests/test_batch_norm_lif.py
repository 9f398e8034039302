"""The fused batch norm + LIF op against F.batch_norm + the LIF reference: forward, running statistics, every
gradient, dtypes, odd shapes, residual inputs, eval mode, fallbacks, errors; and the modules / models that use it."""

from __future__ import annotations

import itertools

import pytest
import torch
from kernel_checks import assert_kernels_ran, ops_called, require_kernel
from lif_cases import SURROGATE_NAMES, grads, lif_input
from torch import nn

from ndsnn.models import create
from ndsnn.nn import LIF, batch_norm_lif_fusion, batch_norm_then_lif
from ndsnn.nn.batch_norm_lif import fusable
from ndsnn.ops import batch_norm_lif, batch_norm_lif_reference
from ndsnn.ops.batch_norm_lif import MAX_FUSED_STEPS

SHAPES = ((4, 3, 5, 6, 7), (1, 2, 3), (3, 2, 17, 1, 5), (2, 1, 1, 3, 3), (5, 4, 2, 9))
NEURON_OPTIONS = [
    dict(v_reset=v_reset, decay_input=decay, detach_reset=detach, surrogate=surrogate)
    for (v_reset, decay, detach), surrogate in zip(
        itertools.product((0.0, None, -0.25), (True, False), (True, False)), itertools.cycle(SURROGATE_NAMES)
    )
]


def _kernels_required(device: torch.device) -> None:
    for op in ("batch_norm_stats", "batch_norm_lif_forward", "batch_norm_lif_backward"):
        require_kernel(op, device)


def _case(shape, device, dtype, affine=True, residual=False):
    channels = shape[2]
    x = (lif_input(shape, device, torch.float64, scale=2.0) * 1.5 + 0.3).to(dtype).requires_grad_()
    weight = bias = res = None
    if affine:
        weight = torch.linspace(0.5, 1.5, channels, dtype=torch.float64).to(device, dtype).requires_grad_()
        bias = torch.linspace(-0.3, 0.6, channels, dtype=torch.float64).to(device, dtype).requires_grad_()
    if residual:
        res = lif_input(shape, device, torch.float64, scale=0.5).to(dtype).requires_grad_()
    running_mean = torch.linspace(-0.2, 0.2, channels, dtype=torch.float64).to(device, dtype)
    running_var = torch.linspace(0.5, 2.0, channels, dtype=torch.float64).to(device, dtype)
    return x, weight, bias, res, running_mean, running_var


def _run(fn, case, training, options, grad_seed=1, tau=4.0 / 3.0, v_threshold=1.0):
    """Runs fn on fresh leaf copies; returns spikes, (running_mean, running_var), gradients of the leaves.
    For the fused op itself, asserts that its compiled kernels (not the unfused composition) ran."""
    if fn is not batch_norm_lif:
        return _run_once(fn, case, training, options, grad_seed, tau, v_threshold)
    result, called = ops_called(lambda: _run_once(fn, case, training, options, grad_seed, tau, v_threshold))
    assert_kernels_ran(called, "batch_norm_lif_forward", "batch_norm_lif_backward")
    return result


def _run_once(fn, case, training, options, grad_seed, tau, v_threshold):
    x, weight, bias, res, running_mean, running_var = case
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, bias, res)]
    stats = (running_mean.clone(), running_var.clone())
    out = fn(leaves[0], *stats, leaves[1], leaves[2], training, 0.1, 1e-5, tau, v_threshold, **options,
             residual=leaves[3])  # fmt: skip
    spikes = out[0] if isinstance(out, tuple) else out
    torch.manual_seed(grad_seed)  # drawn in float64 so that every dtype gets the same values, rounded
    grad_out = torch.randn(spikes.shape, dtype=torch.float64).to(spikes.device, spikes.dtype)
    return spikes, stats, grads([spikes], [t for t in leaves if t is not None], [grad_out])


@pytest.mark.parametrize("options", NEURON_OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
@pytest.mark.parametrize("training", [True, False])
def test_matches_reference_float64(device, options, training):
    """In float64 the fused op and F.batch_norm + lif_reference agree to rounding: same spikes, same running
    statistics, same gradients for x, weight, bias and the residual."""
    _kernels_required(device)
    for index, shape in enumerate(SHAPES):
        case = _case(shape, device, torch.float64, affine=index != 1, residual=index % 2 == 0)
        s_k, stats_k, g_k = _run(batch_norm_lif, case, training, options)
        s_r, stats_r, g_r = _run(batch_norm_lif_reference, case, training, options)
        assert torch.equal(s_k, s_r), shape
        assert 0 < s_r.mean() < 1 or shape[0] * shape[1] < 3
        for got, want in zip(stats_k + tuple(g_k), stats_r + tuple(g_r), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_matches_reference_float32(device, residual, training):
    _kernels_required(device)
    options = dict(v_reset=0.0, decay_input=True, detach_reset=True, surrogate="atan")
    compared = 0
    for shape in SHAPES:
        case = _case(shape, device, torch.float32, residual=residual)
        s_k, stats_k, g_k = _run(batch_norm_lif, case, training, options)
        s_r, stats_r, g_r = _run(batch_norm_lif_reference, case, training, options)
        # A spike may flip where h is within rounding of the threshold; then gradients differ there too.
        flips = (s_k != s_r).float().mean().item()
        assert flips <= 1e-3, shape
        if flips == 0:
            compared += 1
            for got, want in zip(stats_k + tuple(g_k), stats_r + tuple(g_r), strict=True):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert compared >= len(SHAPES) - 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_inputs_match_float32(device, dtype):
    """16-bit x is normalised and integrated in float32: the op on 16-bit x equals the float32 op on the same
    (rounded) values up to the rounding of its 16-bit outputs."""
    _kernels_required(device)
    options = dict(v_reset=0.0, decay_input=True, detach_reset=True, surrogate="atan")
    case16 = _case((4, 3, 5, 6, 7), device, dtype, residual=True)
    x, weight, bias, res, running_mean, running_var = case16
    case32 = (x.float(), weight.float(), bias.float(), res.float(), running_mean.float(), running_var.float())
    # BN parameters stay float32, as in a model under autocast.
    case16 = (x, case32[1], case32[2], res, case32[4], case32[5])
    s16, stats16, g16 = _run(batch_norm_lif, case16, True, options)
    s32, stats32, g32 = _run(batch_norm_lif, case32, True, options)
    assert s16.dtype == dtype
    assert (s16.float() != s32).float().mean() < 1e-3
    for got, want in zip(stats16, stats32, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(g16, g32, strict=True):
        scale = want.abs().max().item()
        assert (got.float() - want).abs().max().item() <= 2e-2 * scale


def test_zero_grad_and_all_silent(device):
    """A zero upstream gradient gives zero gradients; a layer that never fires still has surrogate gradients."""
    _kernels_required(device)
    options = dict(v_reset=0.0, decay_input=True, detach_reset=True, surrogate="atan")
    x, weight, bias, _, rm, rv = _case((3, 2, 4, 5), device, torch.float32)
    spikes = batch_norm_lif(x, rm, rv, weight, bias, True, 0.1, 1e-5, 2.0, 1e6, **options)
    assert not spikes.any()
    g = torch.autograd.grad(spikes, (x, weight, bias), torch.zeros_like(spikes), retain_graph=True)
    assert all(not t.any() for t in g)
    g = torch.autograd.grad(spikes, (x, weight, bias), torch.ones_like(spikes))
    assert all(torch.isfinite(t).all() for t in g)


def test_constant_channel(device):
    """A channel with one value everywhere (silent input, a dead channel) has variance 0: finite running
    statistics and the reference's gradients, not an infinite variance."""
    _kernels_required(device)
    options = dict(v_reset=0.0, decay_input=True, detach_reset=True, surrogate="atan")
    case = list(_case((3, 2, 4, 5, 5), device, torch.float32))
    with torch.no_grad():
        case[0][:, :, 1] = 0.75
    s_k, stats_k, g_k = _run(batch_norm_lif, case, True, options)
    s_r, stats_r, g_r = _run(batch_norm_lif_reference, case, True, options)
    assert torch.equal(s_k, s_r)
    assert all(torch.isfinite(s).all() for s in stats_k)
    for got, want in zip(stats_k + tuple(g_k), stats_r + tuple(g_r), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    mean, var = torch.ops.ndsnn.batch_norm_stats(case[0].detach())
    assert var[1].item() == pytest.approx(0.0, abs=1e-12) and mean[1].item() == pytest.approx(0.75)


def test_empty_batch_in_eval(device):
    _kernels_required(device)
    x, weight, bias, _, rm, rv = _case((3, 0, 4, 5), device, torch.float32)
    spikes = batch_norm_lif(x, rm, rv, weight, bias, False)
    assert spikes.shape == x.shape
    spikes.sum().backward()
    assert x.grad.shape == x.shape and weight.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_lif(x, rm, rv, weight, bias, True)


def test_without_running_statistics(device):
    """Batch statistics only (track_running_stats=False), as F.batch_norm with None running stats."""
    _kernels_required(device)
    options = dict(v_reset=0.0, decay_input=True, detach_reset=False, surrogate="sigmoid")
    x, weight, bias, _, _, _ = _case((4, 3, 5, 6), device, torch.float64)
    s_k = batch_norm_lif(x, None, None, weight, bias, True, 0.1, 1e-5, 2.0, 1.0, **options)
    s_r, _ = batch_norm_lif_reference(x, None, None, weight, bias, True, 0.1, 1e-5, 2.0, 1.0, **options)
    assert torch.equal(s_k, s_r)


def test_fallbacks_agree(device):
    """Tensor-valued neuron parameters and sequences over MAX_FUSED_STEPS run the unfused composition."""
    _kernels_required(device)
    options = dict(v_reset=0.0, decay_input=True, detach_reset=True, surrogate="atan")
    x, weight, bias, _, rm, rv = _case((MAX_FUSED_STEPS + 1, 2, 3, 2), device, torch.float64)
    s_k = batch_norm_lif(x, rm.clone(), rv.clone(), weight, bias, True, 0.1, 1e-5, 2.0, 1.0, **options)
    s_r, _ = batch_norm_lif_reference(x, rm.clone(), rv.clone(), weight, bias, True, 0.1, 1e-5, 2.0, 1.0, **options)
    assert torch.equal(s_k, s_r)
    tau = torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64, device=device, requires_grad=True)
    x = x[:4].detach().requires_grad_()
    s_k = batch_norm_lif(x, rm.clone(), rv.clone(), weight, bias, True, 0.1, 1e-5, tau, 1.0, **options)
    s_r, _ = batch_norm_lif_reference(x, rm.clone(), rv.clone(), weight, bias, True, 0.1, 1e-5, tau, 1.0, **options)
    assert torch.equal(s_k, s_r)
    (g_k,) = torch.autograd.grad(s_k.sum(), tau)
    (g_r,) = torch.autograd.grad(s_r.sum(), tau)
    torch.testing.assert_close(g_k, g_r)


def test_saves_only_the_input():
    """The fused layer keeps x for backward and recomputes h: fewer saved bytes than batch norm + LIF."""
    _kernels_required(torch.device("cpu"))
    bn, lif = nn.BatchNorm2d(8), LIF(tau=4.0 / 3.0, detach_reset=True)
    x = torch.randn(4, 2, 8, 6, 6, requires_grad=True)

    def saved_bytes(enabled: bool) -> int:
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.numel() > 64:  # activations, not the [C] vectors
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with batch_norm_lif_fusion(enabled), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            batch_norm_then_lif(bn, lif, x * 1.0)
        return sum(saved.values())

    assert saved_bytes(True) == x.numel() * 4
    assert saved_bytes(False) >= 2 * x.numel() * 4


def test_argument_errors():
    x = torch.randn(2, 3, 4, 5)
    rm, rv = torch.zeros(4), torch.ones(4)
    with pytest.raises(TypeError, match="x_seq"):
        batch_norm_lif(x.long(), rm, rv)
    with pytest.raises(ValueError, match=r"x_seq must have shape \[T, N, C"):
        batch_norm_lif(x[0, 0], rm, rv)
    with pytest.raises(ValueError, match=r"weight must have shape \[C\] = \[4\]"):
        batch_norm_lif(x, rm, rv, torch.ones(5))
    with pytest.raises(ValueError, match="running_mean and running_var"):
        batch_norm_lif(x, rm, None, training=True)
    with pytest.raises(ValueError, match="training=False"):
        batch_norm_lif(x, None, None, training=False)
    with pytest.raises(ValueError, match="momentum"):
        batch_norm_lif(x, rm, rv, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        batch_norm_lif(x, rm, rv, eps=0.0)
    with pytest.raises(ValueError, match="residual"):
        batch_norm_lif(x, rm, rv, residual=torch.zeros(2, 3, 4, 6))
    with pytest.raises(ValueError, match="tau must be > 1"):
        batch_norm_lif(x, rm, rv, tau=0.5)
    with pytest.raises(ValueError, match="surrogate"):
        batch_norm_lif(x, rm, rv, surrogate="relu")


def test_compiled_op_checks_its_arguments():
    _kernels_required(torch.device("cpu"))
    x = torch.randn(2, 3, 4, 5)
    mean, invstd = torch.zeros(4), torch.ones(4)
    settings = (2.0, 1.0, 0.0, True, False, "atan", 2.0, True)
    with pytest.raises(RuntimeError, match=r"mean must have shape \[C\] = \[4\]"):
        torch.ops.ndsnn.batch_norm_lif_forward(x, None, None, None, torch.zeros(3), invstd, *settings)
    with pytest.raises(RuntimeError, match="at most 64 time steps"):
        torch.ops.ndsnn.batch_norm_lif_forward(torch.randn(65, 1, 4), None, None, None, mean, invstd, *settings)
    with pytest.raises(RuntimeError, match="grad_spikes must match x"):
        torch.ops.ndsnn.batch_norm_lif_backward(x[:1], x, None, None, None, mean, invstd, *settings)


def _opcheck_samples(device):
    x = lif_input((4, 2, 3, 5), device)
    w = torch.tensor([0.5, 1.0, 2.0], device=device, requires_grad=True)
    b = torch.tensor([0.1, -0.2, 0.0], device=device, requires_grad=True)
    mean, var = torch.ops.ndsnn.batch_norm_stats(x)
    invstd = torch.rsqrt(var + 1e-5)
    r = torch.randn_like(x)
    return [
        (x.clone().requires_grad_(), None, w, b, mean, invstd, 2.0, 1.0, 0.0, True, False, "atan", 2.0, True),
        (
            x.clone().requires_grad_(),
            r.requires_grad_(),
            None,
            None,
            mean,
            invstd,
            1.5,
            0.5,
            None,
            False,
            True,
            "sigmoid",
            4.0,
            False,
        ),  # fmt: skip
        (
            x.double().requires_grad_(),
            None,
            w.double(),
            None,
            mean.double(),
            invstd.double(),
            3.0,
            1.0,
            -0.1,
            True,
            True,
            "triangle",
            1.0,
            True,
        ),  # fmt: skip
        (x.bfloat16().requires_grad_(), None, w, b, mean, invstd, 2.0, 1.0, 0.0, True, True, "atan", 2.0, True),
    ]


def test_opcheck(device):
    _kernels_required(device)
    x = lif_input((3, 2, 4, 5), device)
    torch.library.opcheck(torch.ops.ndsnn.batch_norm_stats.default, (x,))
    torch.library.opcheck(torch.ops.ndsnn.batch_norm_stats.default, (x.half(),))
    for args in _opcheck_samples(device):
        torch.library.opcheck(torch.ops.ndsnn.batch_norm_lif_forward.default, args)
    args = _opcheck_samples(device)[0]
    spikes = torch.ops.ndsnn.batch_norm_lif_forward(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    backward_args = (torch.randn_like(spikes), detached[0], torch.randn_like(spikes), *detached[2:])
    torch.library.opcheck(torch.ops.ndsnn.batch_norm_lif_backward.default, backward_args)


def test_stats_match_torch(device):
    _kernels_required(device)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = (torch.randn(3, 4, 5, 7, 2, dtype=torch.float64) * 3 + 10).to(device, dtype)
        mean, var = torch.ops.ndsnn.batch_norm_stats(x)
        want_var, want_mean = torch.var_mean(x.double(), dim=(0, 1, 3, 4), correction=0)
        torch.testing.assert_close(mean.double(), want_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(var.double(), want_var, rtol=1e-5, atol=1e-5)


def test_torch_compile(device):
    _kernels_required(device)
    x, weight, bias, res, rm, rv = _case((3, 2, 4, 5), device, torch.float32, residual=True)
    fn = torch.compile(batch_norm_lif, backend="aot_eager", fullgraph=False)
    s_c = fn(x, rm.clone(), rv.clone(), weight, bias, True, residual=res)
    s_e = batch_norm_lif(x, rm.clone(), rv.clone(), weight, bias, True, residual=res)
    assert torch.equal(s_c, s_e)
    (g_c,) = torch.autograd.grad(s_c.sum(), x)
    (g_e,) = torch.autograd.grad(s_e.sum(), x)
    torch.testing.assert_close(g_c, g_e)


# ---- modules and models -------------------------------------------------------------------------------------


def _bn_lif_pair(momentum=0.1, affine=True, track=True):
    bn = nn.BatchNorm2d(5, momentum=momentum, affine=affine, track_running_stats=track).double()
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return bn, LIF(tau=4.0 / 3.0, detach_reset=True)


@pytest.mark.parametrize("momentum,affine,track", [(0.1, True, True), (None, True, True), (0.3, False, True),
                                                   (0.1, True, False)])  # fmt: skip
def test_batch_norm_then_lif_equals_the_modules(device, momentum, affine, track):
    """Three training calls then one eval call: fused and unfused layers give the same spikes, gradients,
    running statistics and batch counts."""
    _kernels_required(device)
    layers = {}
    for enabled in (True, False):
        torch.manual_seed(3)
        bn, lif = _bn_lif_pair(momentum, affine, track)
        layers[enabled] = (bn.to(device), lif.to(device))
    for step in range(4):
        x = (torch.randn(3, 4, 5, 6, 6, dtype=torch.float64, device=device) * 2 + 0.5).requires_grad_()
        residual = torch.randn_like(x) * 0.3
        results = []
        for enabled, (bn, lif) in layers.items():
            bn.train(step < 3)
            assert fusable(bn, lif, x)
            xi = x.detach().clone().requires_grad_()
            with batch_norm_lif_fusion(enabled):
                spikes = batch_norm_then_lif(bn, lif, xi, residual)
            params = [p for p in bn.parameters()]
            g = torch.autograd.grad(spikes, [xi, *params], torch.ones_like(spikes))
            results.append((spikes, g, [b.clone() for b in bn.buffers()]))
        (s_f, g_f, b_f), (s_u, g_u, b_u) = results
        assert torch.equal(s_f, s_u)
        for got, want in zip(g_f + tuple(b_f), g_u + tuple(b_u), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_not_fused_where_the_layers_need_more(device):
    bn = nn.BatchNorm2d(4).to(device)
    x = torch.randn(2, 3, 4, 5, 5, device=device)
    assert fusable(bn, LIF(), x)
    assert not fusable(bn, LIF(learnable_threshold=True), x)
    assert not fusable(bn, LIF(num_channels=4), x)
    assert not fusable(bn, LIF(store_h=True), x)
    assert not fusable(bn, LIF(), torch.randn(2, 3, 5, 5, 5, device=device))
    lif = LIF()
    lif.register_forward_hook(lambda *args: None)
    assert not fusable(bn, lif, x)
    with batch_norm_lif_fusion(False):
        assert not fusable(bn, LIF(), x)
    assert fusable(bn, LIF(), x)
    # A layer that is not fused still works, and keeps what it is asked to keep.
    lif = LIF(store_h=True)
    spikes = batch_norm_then_lif(bn, lif, x)
    assert spikes.shape == x.shape and lif.last_h is not None


@pytest.mark.parametrize("model_name", ["vgg16", "resnet19"])
def test_model_training_step_fused_equals_unfused(model_name):
    """A whole model's forward and backward in float64: fusion changes neither the loss nor the gradients."""
    _kernels_required(torch.device("cpu"))
    torch.manual_seed(0)
    size = 32 if model_name == "vgg16" else 16
    model = create(model_name, num_classes=10, in_channels=3, timesteps=2, image_size=size).double()
    images = torch.randn(3, 3, size, size, dtype=torch.float64)
    labels = torch.tensor([1, 5, 7])
    outcome = {}
    for enabled in (True, False):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.zero_grad()
        with batch_norm_lif_fusion(enabled):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.mean(0), labels)
        loss.backward()
        outcome[enabled] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()},
                            {k: v.clone() for k, v in model.state_dict().items()})  # fmt: skip
        model.load_state_dict(state)
    (loss_f, grads_f, state_f), (loss_u, grads_u, state_u) = outcome[True], outcome[False]
    torch.testing.assert_close(loss_f, loss_u, rtol=1e-12, atol=1e-12)
    assert grads_f.keys() == grads_u.keys() and state_f.keys() == state_u.keys()
    assert any(g.abs().sum() > 0 for g in grads_f.values())
    for name in grads_f:
        torch.testing.assert_close(grads_f[name], grads_u[name], rtol=1e-8, atol=1e-10, msg=name)
    for name in state_f:
        torch.testing.assert_close(state_f[name], state_u[name], rtol=1e-10, atol=1e-12, msg=name)


def test_spike_observers_keep_the_fusion_and_see_its_spikes():
    """The trainer's firing rates observe every LIF layer without a forward hook, so batch norm + LIF still
    runs fused in training, and the observer sees the fused op's spikes (and the unfused layer's)."""
    _kernels_required(torch.device("cpu"))
    bn, lif = nn.BatchNorm2d(4), LIF()
    x = torch.randn(2, 3, 4, 5, 5)
    seen = []
    handle = lif.observe_spikes(lambda module, spikes: seen.append((module, spikes)))
    assert fusable(bn, lif, x)
    spikes, called = ops_called(lambda: batch_norm_then_lif(bn, lif, x))
    assert "batch_norm_lif_forward" in called
    assert len(seen) == 1 and seen[0][0] is lif and seen[0][1] is spikes
    with batch_norm_lif_fusion(False):
        unfused = batch_norm_then_lif(bn, lif, x)
    assert len(seen) == 2 and seen[1][1] is unfused
    handle.remove()
    batch_norm_then_lif(bn, lif, x)
    assert len(seen) == 2


def test_trainer_spike_rates_leave_the_model_fusable(tmp_path):
    from ndsnn.train.config import TrainConfig
    from ndsnn.train.trainer import Trainer

    config = TrainConfig(dataset="digits", model="convnet", method="static", epochs=1, out=str(tmp_path),
                         progress=False)  # fmt: skip
    model = Trainer(config, tmp_path).model
    block = model.block
    assert fusable(block.bn.module, block.lif, torch.zeros(2, 2, block.bn.module.num_features, 3, 3))
