"""The measured choice between sparse kernels and the dense op: what a decision depends on, when it is timed
(once per layer configuration and density bucket, or never where its neighbours settle it), the disk cache
(atomic, per machine, a corrupt file ignored), the table policy, checkpointed decisions, and torch.compile."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import _Recorder

import ndsnn
from ndsnn.ops import dispatch


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """The measured policy with a private disk cache and fake timings: returns the list of timed calls."""
    monkeypatch.setenv("NDSNN_DISPATCH", "measure")
    monkeypatch.setenv("NDSNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dispatch, "_forced_policy", None)
    dispatch.clear()
    timed = []
    yield timed
    dispatch.clear()


def _call(bucket: int = 8, **changes) -> dispatch.LayerCall:
    fields = dict(op="conv2d", device="cpu:2threads", dtype="torch.float32", x_shape=(8, 16, 8, 8),
                  weight_shape=(16, 16, 3, 3), geometry=((1, 1), (1, 1), (1, 1), 1), grads=(True, True),
                  spikes=True, bucket=bucket)  # fmt: skip
    fields.update(changes)
    return dispatch.LayerCall(**fields)


def _timers(timed: list, sparse_s: float, dense_s: float):
    def timers():
        timed.append((sparse_s, dense_s))
        return (lambda: None), (lambda: None)

    return timers


def _decide(call, timed, sparse_s, dense_s, monkeypatch) -> bool:
    monkeypatch.setattr(dispatch, "_time_both", lambda sparse, dense, device: (sparse_s, dense_s))
    return dispatch.decide(
        call, _timers(timed, sparse_s, dense_s), lambda: pytest.fail("no prior"), torch.device("cpu")
    )


def test_a_decision_is_timed_once_and_needs_a_clear_margin(measured, monkeypatch):
    assert _decide(_call(), measured, 1.0, 2.0, monkeypatch) is True
    assert _decide(_call(), measured, 9.0, 1.0, monkeypatch) is True  # cached: not timed again
    assert len(measured) == 1
    assert _decide(_call(dtype="torch.bfloat16"), measured, 1.0, 1.05, monkeypatch) is False  # within the margin
    assert len(measured) == 2


@pytest.mark.parametrize(
    "change",
    [dict(dtype="torch.float64"), dict(device="cuda:NVIDIA H200"), dict(x_shape=(16, 16, 8, 8)), dict(spikes=False),
     dict(grads=(False, True)), dict(geometry=((2, 2), (1, 1), (1, 1), 1)), dict(op="linear"), dict(bucket=9)],
)  # fmt: skip
def test_every_part_of_a_call_is_in_its_key(change):
    assert _call().key() != _call(**change).key()


def test_neighbouring_densities_settle_a_new_bucket_without_timing(measured, monkeypatch):
    assert _decide(_call(bucket=8), measured, 1.0, 2.0, monkeypatch) is True  # sparse wins at density 2^-2
    assert _decide(_call(bucket=20), measured, 9.0, 1.0, monkeypatch) is True  # sparser: still sparse, not timed
    assert len(measured) == 1
    assert _decide(_call(bucket=4), measured, 2.0, 1.0, monkeypatch) is False  # denser: timed, dense wins
    assert _decide(_call(bucket=2), measured, 0.1, 1.0, monkeypatch) is False  # denser still: dense, not timed
    assert len(measured) == 2
    assert _decide(_call(bucket=6), measured, 1.0, 2.0, monkeypatch) is True  # between: timed
    assert len(measured) == 3


def test_the_disk_cache_is_shared_by_processes_and_a_corrupt_one_is_ignored(measured, monkeypatch):
    assert _decide(_call(), measured, 1.0, 2.0, monkeypatch) is True
    path = dispatch.cache_file()
    payload = json.loads(path.read_text())
    assert payload["format"] == 1 and payload["decisions"] == {_call().key(): True}
    assert not list(path.parent.glob(".*.tmp"))  # written by rename
    dispatch.clear()  # a new process
    assert _decide(_call(), measured, 9.0, 1.0, monkeypatch) is True and len(measured) == 1
    path.write_text("{not json")
    dispatch.clear()
    with pytest.warns(RuntimeWarning, match="ignoring the dispatch cache"):
        assert _decide(_call(), measured, 9.0, 1.0, monkeypatch) is False
    assert json.loads(path.read_text())["decisions"] == {_call().key(): False}  # rewritten


def test_the_table_policy_never_times(monkeypatch):
    monkeypatch.setenv("NDSNN_DISPATCH", "table")
    dispatch.clear()
    timers = _timers([], 1.0, 2.0)
    assert dispatch.decide(_call(), timers, lambda: False, torch.device("cpu")) is False
    assert dispatch.decide(_call(), timers, lambda: True, torch.device("cpu")) is True
    monkeypatch.setenv("NDSNN_DISPATCH", "fast")
    with pytest.raises(ValueError, match="NDSNN_DISPATCH must be measure or table"):
        dispatch.policy()


def test_snapshot_and_preload(measured, monkeypatch):
    _decide(_call(), measured, 1.0, 2.0, monkeypatch)
    saved = dispatch.snapshot()
    dispatch.clear()
    dispatch.preload(saved)
    assert _decide(_call(), measured, 9.0, 1.0, monkeypatch) is True and len(measured) == 1


def test_real_timings_pick_a_path_that_computes_the_layer(measured):
    """No fakes: the op times both paths on this machine, then computes F.linear / F.conv2d on weight * mask."""
    torch.manual_seed(0)
    x = (torch.rand(64, 300) < 0.2).float().requires_grad_()
    weight = torch.randn(40, 300, requires_grad=True)
    mask = torch.rand(weight.shape) < 0.05
    out = ndsnn.ops.sparse_linear(x, weight, mask, spike_input=True)
    torch.testing.assert_close(out, F.linear(x, weight * mask), rtol=1e-5, atol=1e-5)
    decisions = dispatch.snapshot()
    assert len(decisions) == 1 and json.loads(next(iter(decisions)))[0] == "linear"
    conv_x = torch.randn(4, 8, 9, 9, requires_grad=True)
    conv_w = torch.randn(8, 8, 3, 3, requires_grad=True)
    conv_mask = torch.rand(conv_w.shape) < 0.1
    out = ndsnn.ops.sparse_conv2d(conv_x, conv_w, conv_mask, padding=1, spike_input=False)
    torch.testing.assert_close(out, F.conv2d(conv_x, conv_w * conv_mask, padding=1), rtol=1e-5, atol=1e-5)
    assert len(dispatch.snapshot()) == 2


def test_a_mask_change_to_another_density_bucket_is_a_new_decision(measured, monkeypatch):
    calls = []
    monkeypatch.setattr(dispatch, "decide", lambda call, *args: calls.append(call) or False)
    weight = torch.randn(16, 64)
    mask = torch.rand(weight.shape) < 0.5
    x = torch.randn(8, 64)
    ndsnn.ops.sparse_linear(x, weight, mask, spike_input=False)
    mask[:, :8] = ~mask[:, :8]  # about the same density: the same bucket
    ndsnn.ops.sparse_linear(x, weight, mask, spike_input=False)
    mask.copy_(torch.rand(weight.shape) < 0.05)
    ndsnn.ops.sparse_linear(x, weight, mask, spike_input=False)
    assert calls[0].key() == calls[1].key() != calls[2].key()
    assert calls[2].bucket > calls[0].bucket


def test_torch_compile_fullgraph_matches_eager():
    """A model of sparse layers and LIF neurons compiles whole (each sparse call one opaque op) and gives the
    eager model's outputs and gradients."""
    torch.manual_seed(0)

    def build():
        torch.manual_seed(1)
        model = torch.nn.Sequential(
            ndsnn.nn.SparseSpikingConv2d(2, 6, 3, padding=1), ndsnn.nn.LIF(), torch.nn.Flatten(2),
            ndsnn.nn.SparseLinear(6 * 5 * 5, 4),
        )  # fmt: skip
        for layer in (model[0], model[3]):
            layer.set_mask(torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(2)) < 0.3)
        return model

    eager, compiled_model = build(), build()
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 2, 2, 5, 5)  # [T, N, C, H, W]
    out_e, out_c = eager(x), compiled(x)
    torch.testing.assert_close(out_c, out_e)
    out_e.square().sum().backward()
    out_c.square().sum().backward()
    for a, b in zip(eager.parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad)
    assert torch.count_nonzero(compiled_model[3].weight.grad[~compiled_model[3].weight_mask]) == 0


def test_timed_steps_are_the_real_forward_and_backward_of_each_path(measured, monkeypatch):
    """With autograd available a first sight times the layer as training runs it: the op through autograd by
    the sparse kernels and by the dense op, with the gradients the call needs."""
    torch.manual_seed(0)
    ops_run: dict[str, list[str]] = {}

    def recording_time_both(sparse, dense, device):
        ops_run["sparse"], ops_run["dense"] = _names_run(sparse), _names_run(dense)
        return 1.0, 2.0

    monkeypatch.setattr(dispatch, "_time_both", recording_time_both)
    through_autograd = []
    real_steps = dispatch.autograd_steps
    monkeypatch.setattr(dispatch, "autograd_steps", lambda *a: through_autograd.append(1) or real_steps(*a))
    x = torch.randn(6, 4, 7, 7, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, requires_grad=True)
    mask = torch.rand(weight.shape) < 0.2
    out = ndsnn.ops.sparse_conv2d(x, weight, mask, padding=1, spike_input=False)
    torch.testing.assert_close(out, F.conv2d(x, weight * mask, padding=1), rtol=1e-5, atol=1e-5)
    assert "ndsnn::sparse_conv2d_forward" in ops_run["sparse"]
    assert "ndsnn::sparse_conv2d_grad_input" in ops_run["sparse"]  # backward ran, through autograd
    assert "ndsnn::sparse_conv2d_grad_weight" in ops_run["sparse"]
    assert "aten::convolution" in ops_run["dense"] and "aten::convolution_backward" in ops_run["dense"]
    assert not any(op.startswith("ndsnn::") for op in ops_run["dense"])
    assert through_autograd == [1]


def test_without_autograd_the_timed_steps_are_the_explicit_products(measured, monkeypatch):
    """Inside a compiled op's body autograd is off below the op: the steps call the gradient ops directly."""
    monkeypatch.setattr(dispatch, "autograd_usable", lambda: False)
    ops_run: dict[str, list[str]] = {}

    def recording_time_both(sparse, dense, device):
        ops_run["sparse"] = _names_run(sparse)
        return 1.0, 2.0

    monkeypatch.setattr(dispatch, "_time_both", recording_time_both)
    x = torch.randn(6, 4, 7, 7, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, requires_grad=True)
    ndsnn.ops.sparse_conv2d(x, weight, torch.rand(weight.shape) < 0.2, padding=1, spike_input=False)
    assert {"ndsnn::sparse_conv2d_forward", "ndsnn::sparse_conv2d_grad_input",
            "ndsnn::sparse_conv2d_grad_weight"} <= set(ops_run["sparse"])  # fmt: skip


def _names_run(step) -> list[str]:
    """Every op (ndsnn:: and aten::) that ran in step()."""
    with _Recorder() as recorder:
        step()
    return sorted(recorder.names)


def test_above_half_density_the_dense_op_serves_untimed(measured, monkeypatch):
    monkeypatch.setattr(dispatch, "_time_both", lambda *a: pytest.fail("timed a layer above half density"))
    for bucket in range(dispatch.density_bucket(dispatch.MAX_SPARSE_DENSITY)):
        assert dispatch.decide(_call(bucket=bucket), _timers(measured, 1.0, 9.0), lambda: True,
                               torch.device("cpu")) is False  # fmt: skip
    assert not measured and not dispatch.snapshot()


def test_a_mask_changed_behind_its_version_counter_is_decided_again_on_its_true_count(measured, monkeypatch):
    """The dispatch reads a kept count cached by the mask's version; where the sparse kernels are chosen the
    checked index reveals a change made through an alias, and the call is decided again with the true count."""
    from ndsnn.ops.kept_index import kept_count

    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    weight = torch.randn(8, 8, 3, 3, requires_grad=True)
    mask = torch.rand(weight.shape) < 0.05
    decided = []
    monkeypatch.setattr(dispatch, "_time_both", lambda *a: (decided.append(1), (1.0, 2.0))[1])  # sparse wins
    ndsnn.ops.sparse_conv2d(x, weight, mask, padding=1, spike_input=False)
    assert kept_count(mask) == int(mask.sum()) and len(decided) == 1
    old_bucket = dispatch.density_bucket(int(mask.sum()) / mask.numel())
    mask.numpy()[...] = torch.rand(weight.shape).numpy() < 0.3  # the version counter does not move
    assert kept_count(mask) != int(mask.sum())  # stale: it only steers the choice
    out = ndsnn.ops.sparse_conv2d(x, weight, mask, padding=1, spike_input=False)
    torch.testing.assert_close(out, F.conv2d(x, weight * mask, padding=1), rtol=1e-5, atol=1e-5)
    assert kept_count(mask) == int(mask.sum())  # the checked index set it right
    new_bucket = dispatch.density_bucket(int(mask.sum()) / mask.numel())
    assert new_bucket != old_bucket and len(decided) == 2  # the true density was timed too
    assert {json.loads(key)[-1] for key in dispatch.snapshot()} == {old_bucket, new_bucket}


@pytest.mark.parametrize("op", ["linear", "conv2d"])
def test_a_call_planned_dense_runs_the_dense_op_alone_until_something_it_depends_on_changes(measured, monkeypatch, op):
    """A dense decision is remembered on the mask for the call's shapes, kinds and gradients: later eager calls
    skip the planning (a small layer's overhead); the mask's version, another shape, other gradients, a cleared
    dispatch or an unstated input kind are planned again. The value is always the dense op's with the mask as
    it is now."""
    import importlib

    conv_module = importlib.import_module("ndsnn.ops.sparse_conv2d")  # the modules, not the ops of that name
    linear_module = importlib.import_module("ndsnn.ops.sparse_linear")
    torch.manual_seed(0)
    if op == "linear":
        x, weight = torch.randn(6, 12, requires_grad=True), torch.randn(5, 12, requires_grad=True)
        run, reference = ndsnn.ops.sparse_linear, lambda x, w, m: F.linear(x, w * m)
        module, planner = linear_module, "_plan_cpu"
    else:
        x, weight = torch.randn(2, 3, 5, 5, requires_grad=True), torch.randn(4, 3, 3, 3, requires_grad=True)
        run, reference = ndsnn.ops.sparse_conv2d, lambda x, w, m: F.conv2d(x, w * m)
        module, planner = conv_module, "plan_sparse"
    mask = torch.rand(weight.shape) < 0.9  # above half density: dense, untimed
    plans = []
    original = getattr(module, planner)
    monkeypatch.setattr(module, planner, lambda *a, **k: (plans.append(1), original(*a, **k))[1])

    def check(x_in: torch.Tensor, **options) -> None:
        out = run(x_in, weight, mask, **options)
        torch.testing.assert_close(out, reference(x_in, weight, mask))
        gx, gw = torch.autograd.grad(out.square().sum(), (x_in, weight))
        ex, ew = torch.autograd.grad(reference(x_in, weight, mask).square().sum(), (x_in, weight))
        torch.testing.assert_close(gx, ex)
        torch.testing.assert_close(gw, ew)

    check(x, spike_input=False)
    check(x, spike_input=False)
    assert len(plans) == 1  # the second call did not plan
    mask[0].zero_()  # a tracked change: the version moves
    check(x, spike_input=False)
    assert len(plans) == 2
    check(torch.randn(3, *x.shape[1:], requires_grad=True), spike_input=False)  # another batch size
    check(x.detach().clone().requires_grad_(), spike_input=True)  # another input kind
    assert len(plans) == 4
    with torch.no_grad():  # other gradients
        torch.testing.assert_close(run(x, weight, mask, spike_input=False), reference(x, weight, mask))
    assert len(plans) == 5
    dispatch.clear()
    check(x, spike_input=False)
    check(x, spike_input=None)  # the kind read from x's values: planned every time
    check(x, spike_input=None)
    assert len(plans) == 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_the_spike_check_counts_as_count_nonzero_does(dtype):
    """NaN counts as nonzero, -0.0 does not, and the boundary at SPIKE_INPUT_MAX_DENSITY is inclusive."""
    from ndsnn.ops.sparse_conv2d import SPIKE_INPUT_MAX_DENSITY, looks_like_spikes

    numel = 1000
    at_limit = int(SPIKE_INPUT_MAX_DENSITY * numel)
    x = torch.zeros(numel, dtype=dtype)
    x[: at_limit - 2] = 1.0
    x[at_limit - 2] = float("nan")
    x[at_limit - 1] = -3.0
    x[at_limit:] = -0.0
    assert int(x.bool().sum()) == int(torch.count_nonzero(x)) == at_limit
    assert looks_like_spikes(x.view(10, 100))
    x[at_limit] = 0.5
    assert not looks_like_spikes(x.view(10, 100)[:, ::1])
    assert not looks_like_spikes(x.view(10, 100).t())


@pytest.mark.parametrize("rate, spikes", [(0.1, True), (0.25, True), (0.35, False), (0.9, False)])
def test_a_large_input_is_judged_on_a_sample_that_tells_spikes_from_real_values(rate, spikes):
    """Above SPIKE_CHECK_SAMPLE elements the check samples x; planes of even size must not alias the sample
    onto one pixel (a [N, C, 8, 8] input whose first pixel of every plane is 1 is 1/64 dense)."""
    from ndsnn.ops.sparse_conv2d import SPIKE_CHECK_SAMPLE, looks_like_spikes

    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 256, 8, 8, generator=generator) < rate).float()
    assert x.numel() > SPIKE_CHECK_SAMPLE
    assert looks_like_spikes(x) is spikes
    aligned = torch.zeros(64, 256, 8, 8)
    aligned[..., 0, 0] = 1.0
    assert looks_like_spikes(aligned)
    dense_but_pixel_zero = torch.ones(64, 256, 8, 8)
    dense_but_pixel_zero[..., 0, 0] = 0.0
    assert not looks_like_spikes(dense_but_pixel_zero)
    assert looks_like_spikes(x.transpose(0, 1)) is spikes  # not contiguous: counted in full


def test_a_bucket_far_from_the_crossover_is_dense_untimed(measured, monkeypatch):
    """A schedule that lowers the density times only the buckets near the crossover: where dense won by far at a
    higher density, the sparse time scaled to the new density settles it; the timings persist on disk."""
    assert _decide(_call(bucket=4), measured, 10.0, 1.0, monkeypatch) is False  # timed: sparse 10x slower
    assert _decide(_call(bucket=5), measured, 0.1, 1.0, monkeypatch) is False  # scaled: about 8x slower, untimed
    assert len(measured) == 1
    assert _decide(_call(bucket=16), measured, 0.5, 1.0, monkeypatch) is True  # scaled: 1.05x, close: timed
    assert len(measured) == 2
    payload = json.loads(dispatch.cache_file().read_text())
    assert payload["timings"][_call(bucket=4).key()] == [10.0, 1.0]
    dispatch.clear()  # a new process
    assert _decide(_call(bucket=6), measured, 0.1, 1.0, monkeypatch) is False  # from the disk's timing, untimed
    assert len(measured) == 2
    assert _decide(_call(bucket=5, spikes=False), measured, 0.5, 1.0, monkeypatch) is True  # another layer: timed
    assert len(measured) == 3
