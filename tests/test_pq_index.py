"""PQ-index rewiring: the index and its formulas against numpy, and the method on a small model (exact counts,
the floor, compressible layers rewired more, neuron scope, resume, bad arguments, two-process DDP)."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sparse_checks import assert_pruned_zero, ddp_mask_history, small_batch, small_model
from torch import nn

from ndsnn.sparse import create
from ndsnn.sparse.methods.pq_index import compressible_count, pq_index, rewiring_ratio, smallest_per_row

PQ_PAIRS = [(0.5, 1.0), (1.0, 2.0), (0.3, 0.7), (0.5, 2.0)]


def _np_pqi(v: np.ndarray, p: float, q: float) -> float:
    v = np.abs(np.asarray(v, dtype=np.float64))
    if v.size == 0 or not v.any():
        return 0.0
    return 1.0 - v.size ** (1 / q - 1 / p) * np.sum(v**p) ** (1 / p) / np.sum(v**q) ** (1 / q)


def _np_ratio(d: int, pqi: float, p: float, q: float, eta: float, gamma: float, beta: float) -> float:
    m = d * (1 + eta) ** (-q / (q - p)) * (1 - pqi) ** (q * p / (q - p))
    return float(np.clip(gamma * (1 - m / d), 0.0, beta)) if d else 0.0


# -- the index and its formulas ---------------------------------------------------------------------------
@pytest.mark.parametrize("p,q", PQ_PAIRS)
def test_pq_index_matches_numpy(p, q):
    g = torch.Generator().manual_seed(1)
    for size in (1, 7, 300):
        v = torch.randn(size, generator=g)
        assert float(pq_index(v, p, q)) == pytest.approx(_np_pqi(v.numpy(), p, q), rel=1e-10, abs=1e-12)
    w = torch.randn(5, 3, 4, generator=g) * torch.rand(5, 1, 1, generator=g) * 1e3  # rows at different scales
    assert float(pq_index(w, p, q)) == pytest.approx(_np_pqi(w.numpy().ravel(), p, q), rel=1e-10)
    rows = pq_index(w.reshape(5, -1), p, q, dim=1)
    assert rows.shape == (5,)
    np.testing.assert_allclose(rows.numpy(), [_np_pqi(r, p, q) for r in w.reshape(5, -1).numpy()], rtol=1e-10)
    cols = pq_index(w.reshape(5, -1), p, q, dim=0)
    np.testing.assert_allclose(cols.numpy(), [_np_pqi(c, p, q) for c in w.reshape(5, -1).numpy().T], rtol=1e-10)
    mask = torch.rand(5, 12, generator=g) < 0.4
    mask[2] = False  # a row with nothing kept
    masked = pq_index(w.reshape(5, -1), p, q, dim=1, mask=mask)
    expected = [_np_pqi(r[m], p, q) for r, m in zip(w.reshape(5, -1).numpy(), mask.numpy(), strict=True)]
    np.testing.assert_allclose(masked.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert masked[2] == 0.0
    whole = pq_index(w.reshape(5, -1), p, q, mask=mask)
    assert float(whole) == pytest.approx(_np_pqi(w.reshape(5, -1).numpy()[mask.numpy()], p, q), rel=1e-10)


@pytest.mark.parametrize("p,q", PQ_PAIRS)
def test_pq_index_limits(p, q):
    d = 50
    one_hot = torch.zeros(d)
    one_hot[17] = -3.0
    assert float(pq_index(one_hot, p, q)) == pytest.approx(1 - d ** (1 / q - 1 / p), rel=1e-12)  # most compressible
    assert float(pq_index(torch.full((d,), 0.25), p, q)) == pytest.approx(0.0, abs=1e-12)  # not compressible
    signs = torch.where(torch.arange(d) % 3 == 0, -2.0, 2.0)
    assert float(pq_index(signs, p, q)) == pytest.approx(0.0, abs=1e-12)
    assert float(pq_index(torch.zeros(d), p, q)) == 0.0  # all zero: defined as 0
    assert float(pq_index(torch.ones(d), p, q, mask=torch.zeros(d, dtype=torch.bool))) == 0.0  # nothing kept
    v = torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert float(pq_index(v * 1e-30, p, q)) == pytest.approx(float(pq_index(v, p, q)), rel=1e-10)  # scale-free
    assert 0.0 < float(pq_index(v, p, q)) < 1 - d ** (1 / q - 1 / p)


def test_pq_index_rejects_bad_p_q():
    for p, q in ((0.0, 1.0), (1.0, 1.0), (2.0, 1.0)):
        with pytest.raises(ValueError, match="0 < p < q"):
            pq_index(torch.ones(3), p, q)


@pytest.mark.parametrize("p,q", PQ_PAIRS)
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_compressible_count_and_rewiring_ratio_match_the_formulas(p, q, eta):
    rng = np.random.default_rng(3)
    for _ in range(20):
        d, pqi = int(rng.integers(1, 1000)), float(rng.uniform(0, 0.6))
        m = d * (1 + eta) ** (-q / (q - p)) * (1 - pqi) ** (q * p / (q - p))
        assert compressible_count(d, pqi, p, q, eta) == pytest.approx(m, rel=1e-12)
        for gamma, beta in ((1.0, 0.3), (2.5, 0.9), (0.5, 1.0)):
            expected = _np_ratio(d, pqi, p, q, eta, gamma, beta)
            assert rewiring_ratio(d, m, gamma, beta) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    d = torch.tensor([0.0, 10.0, 10.0, 10.0, 1000.0])  # tensors: element-wise, d = 0 gives 0
    pqi = torch.tensor([0.0, 0.0, 0.1, 0.9, 0.05], dtype=torch.float64)
    m = compressible_count(d, pqi, p, q, eta)
    ratio = rewiring_ratio(d, m, 1.0, 0.3)
    expected = [_np_ratio(int(a), float(b), p, q, eta, 1.0, 0.3) for a, b in zip(d, pqi, strict=True)]
    np.testing.assert_allclose(ratio.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_rewiring_ratio_clamps():
    assert rewiring_ratio(10, 12.0) == 0.0  # m > d: clamped at 0
    assert rewiring_ratio(10, 1.0, gamma=1.0, beta=0.3) == 0.3  # 0.9 capped at beta
    assert rewiring_ratio(10, 8.0, gamma=1.0, beta=0.3) == pytest.approx(0.2)  # inside the range
    assert rewiring_ratio(10, 8.0, gamma=2.0, beta=0.3) == 0.3  # 0.4 by gamma, capped
    assert rewiring_ratio(0, 0.0) == 0.0
    assert compressible_count(10, 1.5) == 0.0  # PQI above 1 (never from pq_index): no weight carries it
    torch.testing.assert_close(
        rewiring_ratio(torch.tensor([10.0, 10.0, 10.0]), torch.tensor([12.0, 1.0, 8.0]), 1.0, 0.3),
        torch.tensor([0.0, 0.3, 0.2], dtype=torch.float64),
    )


def test_smallest_per_row_selects_within_rows():
    values = torch.tensor([[5.0, 1.0, 3.0, 2.0], [0.5, 0.1, 0.2, 0.3]])
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    chosen = smallest_per_row(values, mask, torch.tensor([2, 1]))
    assert chosen.tolist() == [[False, False, True, True], [False, True, False, False]]  # pruned 1.0 never chosen


# -- the method on a small model --------------------------------------------------------------------------
def _forward_backward(model, optimizer, step: int) -> None:
    x, y = small_batch(step)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def _train(model, optimizer, method, steps, start=0, each=None):
    for step in range(start, start + steps):
        _forward_backward(model, optimizer, step)
        method.step()
        if each is not None:
            each()


def _setup(lr: float = 0.05, **config):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    config.setdefault("sparsity", 0.8)
    config.setdefault("total_steps", 40)
    config.setdefault("update_interval", 2)
    return model, optimizer, create("pq_index", model, optimizer, **config)


def _counts(method) -> list[int]:
    return [int(layer.weight_mask.sum()) for _, layer in method.layers]


@pytest.mark.parametrize("scope", ["layer", "neuron"])
def test_exact_bookkeeping_hygiene_and_falling_density(scope):
    model, optimizer, method = _setup(sparsity=0.95, scope=scope, total_steps=16)
    assert _counts(method) == method.kept_targets(0.5)  # starts at init_density
    history = [_counts(method)]

    def check():
        assert_pruned_zero(method, optimizer)
        history.append(_counts(method))

    _train(model, optimizer, method, 16, each=check)
    assert [r["step"] for r in method.log] == [2, 4, 6, 8, 10, 12]  # until stop_step = 0.75 * 16
    names = [name for name, _ in method.layers]
    for record in method.log:
        before, after = history[record["step"] - 1], history[record["step"]]
        for name, b, a in zip(names, before, after, strict=True):
            assert a == b - record["dropped"][name] + record["grown"][name]
            assert record["grown"][name] == round(0.5 * record["dropped"][name])  # the floor is far away
            assert record["density"][name] == pytest.approx(a / dict(method.layers)[name].weight.numel())
            assert 0.0 <= record["ratio"][name] <= 0.3 and 0.0 <= record["pqi"][name] < 1.0
    totals = [sum(c) for c in history]
    assert all(a >= b for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1] < totals[0]
    assert sum(sum(r["dropped"].values()) for r in method.log) > 0


@pytest.mark.parametrize("scope", ["layer", "neuron"])
def test_prune_counts_follow_the_pq_index(scope):
    """With no regrowth, each layer (or row) loses floor(c * d) weights, the smallest of it."""
    p, q, eta, gamma, beta = 0.5, 1.5, 0.1, 2.0, 0.6
    model, optimizer, method = _setup(sparsity=0.95, scope=scope, p=p, q=q, eta=eta, gamma=gamma, beta=beta,
                                      regrow_share=0.0, update_interval=3)  # fmt: skip
    _train(model, optimizer, method, 2)
    _forward_backward(model, optimizer, 2)
    weights = [(layer.weight.detach() * layer.weight_mask).abs().clone() for _, layer in method.layers]
    masks = [layer.weight_mask.clone() for _, layer in method.layers]
    method.step()
    record = method.log[-1]
    assert record["step"] == 3
    for (name, layer), weight, before in zip(method.layers, weights, masks, strict=True):
        removed = before & ~layer.weight_mask
        assert not (layer.weight_mask & ~before).any()  # nothing grown
        assert record["grown"][name] == 0 and record["dropped"][name] == int(removed.sum())
        rows = 1 if scope == "layer" else weight.shape[0]
        flat_w, flat_before, flat_removed = (t.reshape(rows, -1).numpy() for t in (weight, before, removed))
        ratios, pqis = [], []
        for w, b, r in zip(flat_w, flat_before, flat_removed, strict=True):
            kept = w[b]
            pqi = _np_pqi(kept, p, q)
            ratio = _np_ratio(kept.size, pqi, p, q, eta, gamma, beta)
            assert r.sum() == math.floor(ratio * kept.size)
            if r.any() and (b & ~r).any():
                assert w[r].max() <= w[b & ~r].min()  # the smallest of the row
            if kept.size:
                ratios.append(ratio)
                pqis.append(pqi)
        assert record["ratio"][name] == pytest.approx(np.mean(ratios), rel=1e-9)
        assert record["pqi"][name] == pytest.approx(np.mean(pqis), rel=1e-9)
    assert sum(record["dropped"].values()) > 0


def test_density_never_goes_below_the_floor_and_reaches_it():
    model, optimizer, method = _setup(sparsity=0.5, init_density=0.9, gamma=10.0, regrow_share=0.0, update_interval=1)
    floors = method.kept_targets(0.5)
    assert _counts(method) == method.kept_targets(0.9)

    def check():
        assert all(c >= f for c, f in zip(_counts(method), floors, strict=True))

    _train(model, optimizer, method, 6, each=check)
    reached = [c == f for c, f in zip(_counts(method), floors, strict=True)]
    assert sum(reached) >= 2  # reached (by the layers that stay compressible) and never crossed
    binding = [r for r in method.log if any(g > 0 for g in r["grown"].values())]
    assert binding  # regrown beyond round(0 * dropped) only because the floor held
    for record in binding:
        for name, floor in zip(record["dropped"], floors, strict=True):
            if record["grown"][name]:
                assert record["density"][name] * dict(method.layers)[name].weight.numel() == pytest.approx(floor)
    assert_pruned_zero(method, optimizer)


def test_a_compressible_layer_is_rewired_more_than_a_uniform_one():
    model, optimizer, method = _setup(lr=0.0, update_interval=1, grow_criterion="random")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        spiky = model[0]  # a few large weights among many tiny ones
        values = torch.full(spiky.weight.shape, 1e-3)
        kept = spiky.weight_mask.view(-1).nonzero().squeeze(1)
        values.view(-1)[kept[torch.randperm(kept.numel(), generator=g)[:3]]] = 5.0
        spiky.weight.copy_(values * spiky.weight_mask)
        flat = model[5]  # equal magnitudes, random signs
        signs = torch.where(torch.rand(flat.weight.shape, generator=g) < 0.5, -0.1, 0.1)
        flat.weight.copy_(signs * flat.weight_mask)
    before = _counts(method)
    _train(model, optimizer, method, 1)
    record = method.log[-1]
    assert record["pqi"]["5"] == pytest.approx(0.0, abs=1e-9) and record["ratio"]["5"] == pytest.approx(0.0)
    assert record["dropped"]["5"] == 0
    assert record["pqi"]["0"] > 0.5 and record["ratio"]["0"] == 0.3  # capped at beta
    assert record["dropped"]["0"] == math.floor(0.3 * before[0]) and record["grown"]["0"] == round(0.15 * before[0])


@pytest.mark.parametrize("grow", ["gradient", "random", "momentum"])
def test_grow_criteria_and_gradient_flags(grow):
    model, optimizer, method = _setup(grow_criterion=grow, update_interval=3)
    assert method.wants_dense_gradient() == (grow == "gradient")
    assert method.tracks_gradient_momentum() == (grow == "momentum")
    _train(model, optimizer, method, 2)
    assert all(layer.dense_weight_grad for _, layer in method.layers) == (grow != "random")  # next step updates
    before = _counts(method)
    _train(model, optimizer, method, 1, start=2)
    record = method.log[-1]
    for (name, _), b, a in zip(method.layers, before, _counts(method), strict=True):
        assert a == b - record["dropped"][name] + record["grown"][name]
    assert_pruned_zero(method, optimizer)


@pytest.mark.parametrize("scope", ["layer", "neuron"])
def test_state_dict_resumes_with_identical_masks(scope):
    config = dict(update_interval=2, total_steps=10, scope=scope)
    model, optimizer, method = _setup(**config)
    _train(model, optimizer, method, 10)
    model_a, optimizer_a, method_a = _setup(**config)
    _train(model_a, optimizer_a, method_a, 3)
    saved = copy.deepcopy((model_a.state_dict(), optimizer_a.state_dict(), method_a.state_dict()))
    model_b, optimizer_b, method_b = _setup(**config)
    model_b.load_state_dict(saved[0])
    optimizer_b.load_state_dict(saved[1])
    method_b.load_state_dict(saved[2])
    _train(model_b, optimizer_b, method_b, 7, start=3)
    assert method_b.log == method.log
    for (_, a), (_, b) in zip(method.layers, method_b.layers, strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask)
        torch.testing.assert_close(a.weight, b.weight)


@pytest.mark.parametrize(
    "config,match",
    [
        ({"total_steps": None}, "total_steps"),
        ({"p": 1.0, "q": 0.5}, "0 < p < q"),
        ({"p": 0.0}, "0 < p < q"),
        ({"eta": -0.1}, "eta must be >= 0"),
        ({"gamma": 0.0}, "gamma must be > 0"),
        ({"beta": 0.0}, r"beta must be in \(0, 1\]"),
        ({"beta": 1.5}, r"beta must be in \(0, 1\]"),
        ({"regrow_share": 1.2}, r"regrow_share must be in \[0, 1\]"),
        ({"regrow_share": -0.1}, "regrow_share"),
        ({"scope": "row"}, "scope must be one of layer, neuron"),
        ({"init_density": 0.1, "sparsity": 0.5}, r"init_density \(0.1\) must be at least the final density"),
        ({"init_density": 1.5}, r"init_density must be in \(0, 1\]"),
        ({"stop_fraction": 0.0}, r"stop_fraction must be in \(0, 1\]"),
        ({"stop_fraction": 1.1}, "stop_fraction"),
        ({"grow_criterion": "magnitude"}, "grow_criterion must be one of momentum, gradient, random"),
    ],
)
def test_bad_arguments(config, match):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = {"total_steps": 10, **config}
    with pytest.raises(ValueError, match=match):
        create("pq_index", model, optimizer, **config)


# -- two processes ----------------------------------------------------------------------------------------
WORLD = 2
DDP_CONFIGS = [("layer", "momentum"), ("neuron", "gradient"), ("neuron", "random")]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes share the cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        runs = []
        for scope, grow in DDP_CONFIGS:  # one process group for all: spawning dominates the cost
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            method = create("pq_index", model, optimizer, sparsity=0.8, update_interval=2, total_steps=10, seed=3,
                            scope=scope, grow_criterion=grow)  # fmt: skip
            ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)  # masks are not copied over
            masks = ddp_mask_history(ddp, optimizer, method, rank, steps=10)
            runs.append({"masks": masks, "log": method.log})
        torch.save(runs, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_masks_stay_identical_across_ranks(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for run_a, run_b in zip(*ranks, strict=True):  # per configuration
        assert len(run_a["log"]) == 3 and run_a["log"] == run_b["log"]
        for step_a, step_b in zip(run_a["masks"], run_b["masks"], strict=True):  # after every step
            for a, b in zip(step_a, step_b, strict=True):
                assert torch.equal(a, b)
        assert sum(sum(r["dropped"].values()) for r in run_a["log"]) > 0
