"""The sparsity methods on a small model: exact counts, schedules, drop / grow rules, state, bad config."""

from __future__ import annotations

import copy

import pytest
import torch
from sparse_checks import assert_pruned_zero, small_batch, small_model
from torch import nn

import ndsnn
from ndsnn.sparse import create, top_k_mask
from ndsnn.sparse.schedule import cosine_drop_fraction


def _train(model, optimizer, method, steps, start=0):
    for step in range(start, start + steps):
        x, y = small_batch(step)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        method.step()


def _setup(name, **config):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    config.setdefault("sparsity", 0.8)
    method = create(name, model, optimizer, **config)
    return model, optimizer, method


def _counts(method):
    return [int(layer.weight_mask.sum()) for _, layer in method.layers]


def test_static_keeps_exact_counts_and_its_mask():
    model, optimizer, method = _setup("static", update_interval=2, distribution="uniform")
    assert _counts(method) == method.kept_targets(0.2)
    masks = [layer.weight_mask.clone() for _, layer in method.layers]
    _train(model, optimizer, method, 6)
    assert all(torch.equal(m, layer.weight_mask) for m, (_, layer) in zip(masks, method.layers, strict=True))
    assert_pruned_zero(method, optimizer)
    assert method.log == []


def test_set_drops_and_grows_equal_counts_at_fixed_density():
    model, optimizer, method = _setup("set", update_interval=3, drop_fraction=0.25)
    before = _counts(method)
    _train(model, optimizer, method, 9)
    assert _counts(method) == before
    assert [r["step"] for r in method.log] == [3, 6, 9]
    for record in method.log:
        for name, kept in zip(record["dropped"], before, strict=True):
            assert record["dropped"][name] == record["grown"][name] == round(0.25 * kept)
    assert_pruned_zero(method, optimizer)


def test_rigl_grows_where_the_dense_gradient_is_largest():
    model, optimizer, method = _setup("rigl", update_interval=2, total_steps=20)
    _train(model, optimizer, method, 1)
    layers = method.layers
    assert all(layer.dense_weight_grad for _, layer in layers)  # the next step updates: dense gradient asked
    x, y = small_batch(1)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [layer.weight.grad.abs().clone() for _, layer in layers]
    old = [layer.weight_mask.clone() for _, layer in layers]
    optimizer.step()
    method.step()
    assert method.log[-1]["step"] == 2
    fraction = cosine_drop_fraction(2, 0.3, method.stop_step())
    assert method.log[-1]["drop_fraction"] == pytest.approx(fraction)
    for (_, layer), grad, before in zip(layers, grads, old, strict=True):
        grown = layer.weight_mask & ~before
        candidates = ~layer.weight_mask & ~before  # pruned before and after: not chosen
        assert grad[candidates].max() > 0  # the dense gradient reached pruned positions
        if grown.any():
            assert grad[grown].min() >= grad[candidates].max()
        assert torch.count_nonzero(layer.weight[grown]) == 0  # grown weights start at zero
        assert torch.count_nonzero(optimizer.state[layer.weight]["momentum_buffer"][grown]) == 0  # and momentum
        assert not layer.dense_weight_grad


def test_ndsnn_count_follows_its_schedule_and_never_increases():
    model, optimizer, method = _setup("ndsnn", sparsity=0.9, init_density=0.5, update_interval=2, total_steps=24)
    totals = [sum(_counts(method))]
    for step in range(24):
        _train(model, optimizer, method, 1, start=step)
        totals.append(sum(_counts(method)))
    assert all(a >= b for a, b in zip(totals, totals[1:], strict=False))
    assert sum(_counts(method)) == sum(method.kept_targets(0.1))  # final density once the schedule ends (step 18)
    assert totals[0] == sum(method.kept_targets(0.5))
    for record in method.log:
        assert sum(record["dropped"].values()) >= sum(record["grown"].values())
    assert_pruned_zero(method, optimizer)


def test_state_dict_resumes_with_identical_masks():
    config = dict(update_interval=2, total_steps=12, sparsity=0.8)
    model, optimizer, method = _setup("set", **config)
    _train(model, optimizer, method, 12)
    # the same run, interrupted after 5 steps and resumed from saved state
    model_a, optimizer_a, method_a = _setup("set", **config)
    _train(model_a, optimizer_a, method_a, 5)
    saved = copy.deepcopy((model_a.state_dict(), optimizer_a.state_dict(), method_a.state_dict()))
    model_b, optimizer_b, method_b = _setup("set", **config)
    model_b.load_state_dict(saved[0])
    optimizer_b.load_state_dict(saved[1])
    method_b.load_state_dict(saved[2])
    _train(model_b, optimizer_b, method_b, 7, start=5)
    for (_, a), (_, b) in zip(method.layers, method_b.layers, strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask)
        torch.testing.assert_close(a.weight, b.weight)
    with pytest.raises(ValueError, match="this state is of method 'set', not 'static'"):
        _setup("static")[2].load_state_dict(saved[2])


def test_first_and_last_layers_can_stay_dense():
    model, _, method = _setup("static", keep_first_dense=True, keep_last_dense=True)
    assert [name for name, _ in method.layers] == ["2"]
    assert model[0].density == 1.0 and model[5].density == 1.0
    assert isinstance(model[0], ndsnn.nn.SparseSpikingConv2d)


@pytest.mark.parametrize(
    "name,config,match",
    [
        ("magic", {}, "unknown sparsity method 'magic'; choose from static, set, rigl, lth, ndsnn"),
        ("set", {"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
        ("set", {"sparsity": -0.1}, r"sparsity must be in \[0, 1\)"),
        ("set", {"update_interval": 0}, "update_interval must be a positive integer, got 0"),
        ("rigl", {}, "rigl needs total_steps"),
        ("ndsnn", {"total_steps": 10, "init_density": 0.1, "sparsity": 0.5}, "init_density"),
        ("ndsnn", {"total_steps": 10, "init_density": 1.5}, r"initial density must be in \(0, 1\]"),
        ("set", {"distribution": "normal"}, "distribution must be one of uniform, erk"),
        ("lth", {"prune_rate": 1.0}, r"prune_rate must be in \(0, 1\)"),
    ],
)
def test_bad_configuration(name, config, match):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        create(name, model, optimizer, **config)


@pytest.mark.parametrize("drop", ["magnitude", "gradient", "momentum", "random"])
@pytest.mark.parametrize("grow", ["gradient", "momentum", "random"])
def test_every_drop_and_grow_criterion_runs_at_fixed_density(drop, grow):
    model, optimizer, method = _setup("set", update_interval=2, drop_criterion=drop, grow_criterion=grow)
    before = _counts(method)
    _train(model, optimizer, method, 4)
    assert _counts(method) == before
    assert len(method.log) == 2
    assert_pruned_zero(method, optimizer)


def test_momentum_criterion_grows_where_the_running_gradient_is_largest():
    model, optimizer, method = _setup("set", update_interval=3, grow_criterion="momentum")
    _train(model, optimizer, method, 2)
    old = [layer.weight_mask.clone() for _, layer in method.layers]
    _train(model, optimizer, method, 1, start=2)
    for (name, layer), before in zip(method.layers, old, strict=True):
        average = method.gradient_momentum[name].abs()
        grown = layer.weight_mask & ~before
        candidates = ~layer.weight_mask & ~before
        assert average[candidates].max() > 0
        if grown.any():
            assert average[grown].min() >= average[candidates].max()


def test_unknown_criterion():
    model = small_model()
    with pytest.raises(ValueError, match="grow_criterion must be one of magnitude, gradient, momentum, random"):
        create("set", model, torch.optim.SGD(model.parameters(), lr=0.1), grow_criterion="luck")


def test_lth_prunes_globally_by_rounds_and_rewinds():
    model, optimizer, method = _setup("lth", sparsity=0.9, prune_rate=0.25, rewind_step=2)
    assert method.rounds == 10  # 0.75^8 = 0.100 > 0.1, 0.75^9 < 0.1: nine prunings after the dense round
    total = sum(layer.weight.numel() for _, layer in method.layers)
    assert sum(_counts(method)) == total  # dense first round
    _train(model, optimizer, method, 2)
    rewind = [layer.weight.detach().clone() for _, layer in method.layers]
    _train(model, optimizer, method, 3, start=2)
    previous = [layer.weight.detach().clone() for _, layer in method.layers]
    assert method.next_round()
    assert sum(_counts(method)) == round(0.75 * total)
    pairs = list(zip(previous, (layer for _, layer in method.layers), strict=True))
    survivors = torch.cat([p.abs()[layer.weight_mask] for p, layer in pairs])
    pruned = torch.cat([p.abs()[~layer.weight_mask] for p, layer in pairs])
    assert survivors.min() >= pruned.max()  # global magnitude
    for (_, layer), start in zip(method.layers, rewind, strict=True):
        torch.testing.assert_close(layer.weight, start * layer.weight_mask)  # rewound
    rounds = 1
    while method.next_round():
        _train(model, optimizer, method, 1, start=10 + rounds)
        rounds += 1
    assert rounds == method.rounds - 1
    assert sum(_counts(method)) == round(0.1 * total)
    assert method.steps_trained == 5 + rounds - 1
    assert_pruned_zero(method, optimizer)


def test_grown_weights_and_their_optimizer_state_start_at_zero():
    model, optimizer, method = _setup("set", update_interval=100)
    _train(model, optimizer, method, 1)
    _, layer = method.layers[1]
    with torch.no_grad():  # pretend stale values sit at pruned positions
        layer.weight.add_(1.0)
        optimizer.state[layer.weight]["momentum_buffer"].fill_(1.0)
    before = layer.weight_mask.clone()
    [(dropped, grown_count, regrown)] = method.drop_and_grow([(layer, 5, 7, layer.weight.abs(), None)])
    grown = layer.weight_mask & ~before
    assert (dropped, grown_count) == (5, 7) and int(grown.sum()) == 7 - regrown
    assert int(layer.weight_mask.sum()) == int(before.sum()) + 2
    assert torch.count_nonzero(layer.weight[grown]) == 0
    assert torch.count_nonzero(optimizer.state[layer.weight]["momentum_buffer"][grown]) == 0


def test_static_magnitude_mask_keeps_the_largest_initial_weights():
    model = small_model()
    initial = [m.weight.detach().clone() for m in (model[0], model[2], model[5])]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method = create("static", model, optimizer, sparsity=0.7, mask_init="magnitude")
    for (_, layer), weight in zip(method.layers, initial, strict=True):
        assert weight.abs()[layer.weight_mask].min() >= weight.abs()[~layer.weight_mask].max()


def test_ndsnn_schedule_power_is_a_parameter():
    _, _, linear = _setup("ndsnn", sparsity=0.9, init_density=0.5, total_steps=200, schedule_power=1.0)
    _, _, cubic = _setup("ndsnn", sparsity=0.9, init_density=0.5, total_steps=200)
    assert linear.scheduled_density(75) == pytest.approx(0.1 + 0.4 * 0.5)  # halfway through the 150-step decay
    assert cubic.scheduled_density(75) == pytest.approx(0.1 + 0.4 * 0.5**3)


class _Scale(nn.Module):
    """A custom layer with a weight that is neither Conv2d nor Linear."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def test_any_module_with_a_weight_can_be_sparse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 32), _Scale(32), nn.Linear(32, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = create("set", model, optimizer, sparsity=0.75, update_interval=2, extra_modules=(_Scale,))
    assert [name for name, _ in method.layers] == ["1", "2", "3"]
    custom = dict(method.layers)["2"]
    assert isinstance(model[2].weight_mask, torch.Tensor) and "weight_mask" in model[2].state_dict()
    kept = int(custom.weight_mask.sum())
    assert kept == method.kept_targets(0.25)[1]
    _train(model, optimizer, method, 4)
    assert int(custom.weight_mask.sum()) == kept and len(method.log) == 2
    assert torch.count_nonzero(model[2].weight[~model[2].weight_mask]) == 0
    assert torch.count_nonzero(optimizer.state[model[2].weight]["momentum_buffer"][~model[2].weight_mask]) == 0


@pytest.mark.parametrize("method_name", ["set", "rigl", "ndsnn"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw"])
def test_zeroing_only_after_dense_gradients_changes_nothing(method_name, optimizer_name, monkeypatch):
    """Pruned weights are zeroed only after a mask change or a dense-gradient backward; every other step leaves
    them (and their optimizer state) at exactly zero anyway, so the run is bit-identical to zeroing every step."""
    from ndsnn.sparse.methods.base import SparseMethod

    def run(zero_every_step: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(SparseMethod, "zero_every_step", property(lambda self: zero_every_step))
        model = small_model()
        make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
                "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=5e-4),
                "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=5e-2)}[optimizer_name]  # fmt: skip
        optimizer = make(model.parameters())
        method = create(method_name, model, optimizer, sparsity=0.8, total_steps=12, update_interval=4)
        for step in range(12):
            _train(model, optimizer, method, 1, start=step)
            assert_pruned_zero(method, optimizer)  # weights, and SGD's momentum where there is one
        return [p.detach().clone() for p in model.parameters()]

    skipping, always = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(skipping, always, strict=True))


def test_a_whole_layer_is_not_touched_by_an_update():
    """ERK keeps small layers whole: an update must leave such a layer's weights and state exactly as they are."""
    model, optimizer, method = _setup("set", update_interval=2, sparsity=0.3)  # ERK: two of three layers whole
    whole = [(name, layer) for name, layer in method.layers if bool(layer.weight_mask.all())]
    assert whole, "the setup should have a layer that ERK keeps dense"
    _train(model, optimizer, method, 1)
    x, y = small_batch(1)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    before = [(layer.weight.detach().clone(), optimizer.state[layer.weight]["momentum_buffer"].clone())
              for _, layer in whole]  # fmt: skip
    method.step()  # an update
    assert method.log[-1]["step"] == 2
    for (name, layer), (weight, momentum) in zip(whole, before, strict=True):
        assert torch.equal(layer.weight, weight) and torch.equal(optimizer.state[layer.weight]["momentum_buffer"],
                                                                momentum)  # fmt: skip
        assert method.log[-1]["dropped"][name] == method.log[-1]["grown"][name] == 0


def test_a_position_dropped_and_grown_again_keeps_its_weight_and_state():
    model, optimizer, method = _setup("set", update_interval=100)
    _train(model, optimizer, method, 1)
    _, layer = method.layers[1]
    kept = layer.weight_mask.clone()
    weights = layer.weight.detach().clone()
    momentum = optimizer.state[layer.weight]["momentum_buffer"].clone()
    drop_score = layer.weight.detach().abs()
    n = 6
    dropped = kept & ~top_k_mask(torch.where(kept, drop_score, -1.0), int(kept.sum()) - n)
    grow_score = dropped.float() * 10 + torch.rand(kept.shape)  # the dropped positions rank first, then others
    [(n_drop, n_grow, regrown)] = method.drop_and_grow([(layer, n, n + 2, drop_score, grow_score)])
    assert (n_drop, n_grow, regrown) == (n, n + 2, n)
    assert torch.equal(layer.weight[kept], weights[kept])  # every kept position, regrown ones included
    assert torch.equal(optimizer.state[layer.weight]["momentum_buffer"][kept], momentum[kept])
    new = layer.weight_mask & ~kept
    assert int(new.sum()) == 2 and torch.count_nonzero(layer.weight[new]) == 0


def test_one_method_per_model():
    model, optimizer, method = _setup("set")
    with pytest.raises(ValueError, match="already managed by a 'set' sparsity method"):
        create("rigl", model, optimizer, sparsity=0.8, total_steps=10)
    method.close()
    replacement = create("static", model, optimizer, sparsity=0.8)
    assert [name for name, _ in replacement.layers] == [name for name, _ in method.layers]


def test_method_step_before_optimizer_step_is_refused():
    model, optimizer, method = _setup("rigl", update_interval=2, total_steps=20)
    _train(model, optimizer, method, 3)  # the right order passes
    x, y = small_batch(3)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    method.step()  # too early: the optimizer has not used this gradient yet
    with pytest.raises(RuntimeError, match=r"method.step\(\) ran after backward but before optimizer.step\(\)"):
        optimizer.step()


def test_a_skipped_optimizer_step_is_not_mistaken_for_the_wrong_order():
    """GradScaler skips optimizer.step() when gradients overflow; method.step() after it is still right."""
    model, optimizer, method = _setup("set", update_interval=2)
    x, y = small_batch(0)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    method.step()  # the step that was skipped
    _train(model, optimizer, method, 3, start=1)
    assert len(method.log) >= 1
