"""The criticality and attention-guided methods on a small spiking network: their scores against plain
PyTorch, exact budgets, pruned weights and optimizer state at zero, regeneration where neurons are critical,
attention-set densities, structured channels, learnable threshold and leak, the transfer loss, resuming and
identical masks on two DDP ranks."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sparse_checks import assert_pruned_zero
from torch import nn

from ndsnn import models
from ndsnn.nn import LIF
from ndsnn.ops import lif as lif_op
from ndsnn.sparse import create, top_k_mask
from ndsnn.sparse.density import erk_raw_score, proportional_densities
from ndsnn.sparse.methods.attention import attention_importance, attention_map, channel_attention
from ndsnn.sparse.methods.criticality import channel_criticality


def _setup(name: str, seed: int = 0, **config):
    torch.manual_seed(seed)
    model = models.create("convnet", 10, 1, timesteps=2, image_size=8, lif={"v_threshold": 0.5})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    config.setdefault("sparsity", 0.8)
    config.setdefault("total_steps", 12)
    config.setdefault("update_interval", 2)
    return model, optimizer, create(name, model, optimizer, **config)


def _batch(step: int, rank: int = 0):
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(8, 1, 8, 8, generator=g) * 2, torch.randint(0, 10, (8,), generator=g)


def _step(model, optimizer, method, step: int, rank: int = 0, network=None) -> None:
    x, y = _batch(step, rank)
    optimizer.zero_grad()
    loss = models.per_step_cross_entropy((network or model)(x), y)
    extra = method.auxiliary_loss(x) if hasattr(method, "auxiliary_loss") else None
    (loss + extra if extra is not None else loss).backward()
    optimizer.step()
    method.step()


def _train(model, optimizer, method, steps: int, start: int = 0) -> None:
    for step in range(start, start + steps):
        _step(model, optimizer, method, step)


# -- criticality -----------------------------------------------------------------------------------------
def _criticality_reference(h: torch.Tensor, threshold, alpha: float = 2.0) -> torch.Tensor:
    """atan surrogate at h - threshold, mean over T, max over space, mean over the batch, with loops."""
    steps, batch, channels = h.shape[:3]
    result = torch.zeros(channels, dtype=torch.float64)
    for c in range(channels):
        th = float(threshold[c]) if isinstance(threshold, torch.Tensor) and threshold.dim() else float(threshold)
        total = 0.0
        for n in range(batch):
            u = h[:, n, c].double() - th
            grad = (alpha / 2) / (1 + (math.pi / 2 * alpha * u) ** 2)
            total += float(grad.mean(0).max())
        result[c] = total / batch
    return result.float()


@pytest.mark.parametrize("shape, per_channel", [((3, 4, 5, 6, 7), False), ((3, 4, 5, 6, 7), True), ((2, 3, 9), False)])
def test_channel_criticality_matches_plain_pytorch(shape, per_channel):
    channels = shape[2]
    lif = LIF(v_threshold=0.7, num_channels=channels if per_channel else None)
    if per_channel:
        lif.threshold_values.copy_(torch.linspace(0.5, 1.5, channels))
    h = torch.randn(shape) + 0.8
    expected = _criticality_reference(h, lif.v_threshold)
    torch.testing.assert_close(channel_criticality(h, lif), expected, rtol=1e-5, atol=1e-6)


def test_criticality_regenerates_in_the_most_critical_channels():
    model, optimizer, method = _setup("criticality", global_magnitude=False, regeneration_ratio=0.5)
    _train(model, optimizer, method, 1)
    assert method.recording and all(neuron.store_h for _, neuron in method.neurons)  # step 2 updates
    conv = model.block.conv
    before = conv.weight_mask.clone()
    x, y = _batch(1)
    optimizer.zero_grad()
    models.per_step_cross_entropy(model(x), y).backward()
    optimizer.step()
    weights = conv.weight.detach().clone()
    magnitudes = weights.abs()
    expected = _criticality_reference(model.block.lif.last_h, 0.5)
    budget = method.kept_targets(method.scheduled_density(2))[[n for n, _ in method.layers].index("block.conv")]
    method.step()
    record = method.log[-1]
    assert record["criticality_mean"]["block.conv"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert int(conv.weight_mask.sum()) == min(budget, int(before.sum()))
    regrow = round(0.5 * int(conv.weight_mask.sum()))
    assert record["regenerated"]["block.conv"] == regrow
    # (1 - r) of the budget is kept by magnitude; the rest is regenerated in the most critical channels
    by_magnitude = top_k_mask(torch.where(before, magnitudes, -1.0), int(conv.weight_mask.sum()) - regrow)
    regenerated = conv.weight_mask & ~by_magnitude
    assert int(regenerated.sum()) == regrow and not (by_magnitude & ~conv.weight_mask).any()
    left_out = ~conv.weight_mask  # pruned and not regenerated
    channel = torch.arange(conv.weight.shape[0]).view(-1, 1, 1, 1).expand_as(conv.weight)
    assert float(expected[channel[regenerated]].min()) >= float(expected[channel[left_out]].max()) - 1e-6
    # this layer was whole: every regenerated weight was dropped in this very update, so it keeps its value
    assert record["regrown"]["block.conv"] == regrow
    assert torch.equal(conv.weight[regenerated], weights[regenerated])
    assert torch.count_nonzero(conv.weight[regenerated]) == regrow
    assert "fc2" not in record["criticality_mean"] and record["regenerated"]["fc2"] == 0  # no LIF after it
    assert not any(neuron.store_h for _, neuron in method.neurons)  # h kept only before updates


def test_criticality_follows_its_schedule_then_freezes():
    model, optimizer, method = _setup("criticality", total_steps=12, update_interval=2)
    assert method.density == pytest.approx(0.2) and method.initial_density() == 1.0
    totals = []
    for step in range(12):
        _train(model, optimizer, method, 1, start=step)
        assert_pruned_zero(method, optimizer)
        totals.append(sum(int(layer.weight_mask.sum()) for _, layer in method.layers))
    size = sum(layer.weight.numel() for _, layer in method.layers)
    assert all(a >= b for a, b in zip(totals, totals[1:], strict=False))
    assert totals[7] == round(0.2 * size)  # the target at stop_step = 8 (2/3 of 12), then frozen
    assert totals[-1] == totals[7] and method.log[-1]["step"] == 8
    assert method.decision_ops > 0


# -- attention-guided ------------------------------------------------------------------------------------
def test_attention_maps_and_importance():
    a = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(attention_map(a), (a**2).mean(2).mean(0).flatten(1))
    torch.testing.assert_close(channel_attention(a), (a**2).permute(2, 0, 1, 3, 4).reshape(4, -1).mean(1))
    assert attention_importance(torch.ones(1, 16)) == pytest.approx(1.0)
    one_hot = torch.zeros(1, 16)
    one_hot[0, 3] = 5.0
    assert attention_importance(one_hot) == pytest.approx(1 / 16)


def test_attention_sets_densities_from_the_maps_then_rewires():
    model, optimizer, method = _setup("attention", meta_fraction=0.25, total_steps=16, update_interval=2)
    assert method.compression_step() == 4 and all(layer.density == 1.0 for _, layer in method.layers)
    _train(model, optimizer, method, 4)
    record = method.log[0]
    assert record["phase"] == "compression"
    shapes = [tuple(layer.weight.shape) for _, layer in method.layers]
    importance = [record["importance"][name] for name, _ in method.layers]
    scores = [erk_raw_score(s) * i for s, i in zip(shapes, importance, strict=True)]
    expected = proportional_densities([math.prod(s) for s in shapes], scores, 0.2)
    for (name, layer), density in zip(method.layers, expected, strict=True):
        assert record["layer_density"][name] == pytest.approx(density)
        assert int(layer.weight_mask.sum()) == max(1, round(density * layer.weight.numel()))
    counts = [int(layer.weight_mask.sum()) for _, layer in method.layers]
    _train(model, optimizer, method, 8, start=4)
    assert_pruned_zero(method, optimizer)
    assert [int(layer.weight_mask.sum()) for _, layer in method.layers] == counts  # rewiring keeps densities
    assert any(r.get("grown", {}).get("block.conv", 0) > 0 for r in method.log[1:])


def test_structured_attention_prunes_whole_channels_of_least_attention():
    model, optimizer, method = _setup("attention", structured=True, meta_fraction=0.25, total_steps=8)
    captured = {}
    model.block.conv.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.detach()))
    _train(model, optimizer, method, 2)
    mask = model.block.conv.weight_mask
    rows = mask.flatten(1)
    assert bool(((rows.all(1)) | (~rows.any(1))).all())  # every output channel all kept or all pruned
    kept = rows.all(1)
    attention = channel_attention(captured["out"])
    assert float(attention[kept].min()) >= float(attention[~kept].max())


def test_learnable_threshold_and_leak_train_and_match_finite_differences():
    model, optimizer, method = _setup("attention", total_steps=8)
    neurons = [m for m in model.modules() if isinstance(m, LIF)]
    assert all(n.threshold is not None and n.tau_logit is not None for n in neurons)
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(n.threshold) in grouped and id(n.tau_logit) in grouped for n in neurons)
    assert optimizer.param_groups[-1]["weight_decay"] == 0.0
    before = [(n.threshold.item(), n.tau_logit.item()) for n in neurons]
    _train(model, optimizer, method, 6)
    after = [(n.threshold.item(), n.tau_logit.item()) for n in neurons]
    assert all(
        a != b for pair_a, pair_b in zip(before, after, strict=True) for a, b in zip(pair_a, pair_b, strict=True)
    )
    # d h / d (threshold, leak parameter) through the module's parameterisation, by finite differences
    neuron = copy.deepcopy(neurons[1]).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)

    def h_of(threshold, tau_logit):
        neuron._parameters.update(threshold=threshold, tau_logit=tau_logit)  # plain tensors, for gradcheck
        return lif_op(x, neuron.tau, neuron.v_threshold, detach_reset=True, return_h=True)[1]

    inputs = (neuron.threshold.detach().clone().requires_grad_(), neuron.tau_logit.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(h_of, inputs, eps=1e-6, atol=1e-6)


def test_attention_transfer_loss():
    model, optimizer, method = _setup("attention", at_weight=2.0, meta_fraction=0.25, total_steps=8)
    x, _ = _batch(0)
    model(x)
    assert method.auxiliary_loss(x) is None  # no meta-model before compression
    _train(model, optimizer, method, 2)
    assert method.meta_model is not None
    outputs = model(x)
    loss = method.auxiliary_loss(x)
    student = method.activations["block.conv"]
    meta_out = {}
    handle = method.meta_model.block.conv.register_forward_hook(lambda m, i, o: meta_out.__setitem__("o", o))
    with torch.no_grad():
        method.meta_model(x)
    handle.remove()
    assert loss.item() > 0 and loss.requires_grad
    q_s = nn.functional.normalize(attention_map(student.detach()), dim=1)
    q_m = nn.functional.normalize(attention_map(meta_out["o"]), dim=1)
    single = (q_s - q_m).norm(dim=1).mean()
    assert loss.item() >= 2.0 / 2 * single.item() - 1e-6  # one of the summed layer terms
    (loss + outputs.sum() * 0).backward()
    assert model.block.conv.weight.grad is not None


# -- both: resume and DDP --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, config", [("criticality", {}), ("criticality", {"structured": True}), ("attention", {"at_weight": 1.0})]
)
def test_state_dict_resumes_with_identical_masks(name, config):
    model, optimizer, method = _setup(name, **config)
    _train(model, optimizer, method, 12)
    model_a, optimizer_a, method_a = _setup(name, **config)
    _train(model_a, optimizer_a, method_a, 5)
    saved = copy.deepcopy((model_a.state_dict(), optimizer_a.state_dict(), method_a.state_dict()))
    model_b, optimizer_b, method_b = _setup(name, seed=7, **config)
    model_b.load_state_dict(saved[0])
    optimizer_b.load_state_dict(saved[1])
    method_b.load_state_dict(saved[2])
    _train(model_b, optimizer_b, method_b, 7, start=5)
    for (_, a), (_, b) in zip(method.layers, method_b.layers, strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask)
        torch.testing.assert_close(a.weight, b.weight)


@pytest.mark.parametrize(
    "name, config, match",
    [("criticality", {"regeneration_ratio": 1.5}, "regeneration_ratio"),
     ("criticality", {"init_density": 0.1}, "init_density"), ("criticality", {"total_steps": None}, "total_steps"),
     ("attention", {"meta_fraction": 1.0}, "meta_fraction"), ("attention", {"at_weight": -1.0}, "at_weight"),
     ("attention", {"meta_fraction": 0.5, "stop_fraction": 0.4}, "stop_fraction")],
)  # fmt: skip
def test_bad_configuration(name, config, match):
    with pytest.raises(ValueError, match=match):
        _setup(name, **config)


def test_criticality_needs_neurons():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(ValueError, match="needs LIF neurons"):
        create("criticality", model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10)


def _ddp_worker(rank: int, init_file: str, name: str, config: dict, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model, optimizer, method = _setup(name, **config)
        network = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        masks = []
        for step in range(12):
            _step(model, optimizer, method, step, rank=rank, network=network)  # different data on each rank
            masks.append([layer.weight_mask.clone() for _, layer in method.layers])
        torch.save(masks, os.path.join(out_dir, f"{name}-{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo in this torch build")
@pytest.mark.parametrize(
    "name, config", [("criticality", {}), ("criticality", {"structured": True}), ("attention", {})]
)
def test_masks_identical_on_two_ranks(tmp_path, name, config):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), name, config, str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"{name}-{rank}.pt") for rank in range(2))
    for step_a, step_b in zip(first, second, strict=True):
        for a, b in zip(step_a, step_b, strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(first[0][1], first[-1][1])  # the masks did change


# -- criticality, structured: whole channels and the smaller network -----------------------------------------
def test_structured_criticality_prunes_and_regenerates_whole_channels():
    model, optimizer, method = _setup("criticality", structured=True, total_steps=12, update_interval=2)
    _train(model, optimizer, method, 8)  # the last update is at stop_step 8
    assert_pruned_zero(method, optimizer)
    records = [r for r in method.log if "channels" in r]
    assert records and set(records[-1]["channels"]) == {"stem.0.module", "block.conv", "fc1"}  # not fc2
    for name, layer in method.layers:
        rows = layer.weight_mask.flatten(1)
        assert bool((rows.all(1) | ~rows.any(1)).all()), name  # whole channels
        if name == "fc2":
            assert layer.density == 1.0
            continue
        kept = rows.all(1)
        assert int(kept.sum()) == max(1, round(0.2 * kept.numel()))  # the target, same for every layer
        norm = method.norms.get(name)  # fc1 has none: its neurons are ranked by their weights' L1 norm
        assert (norm is None) == (name == "fc1")
        if norm is not None:
            assert torch.count_nonzero(norm.weight[~kept]) == 0 and torch.count_nonzero(norm.bias[~kept]) == 0
    slimming = method.auxiliary_loss(None)
    expected = 1e-4 * sum(norm.weight.abs().sum() for norm in method.norms.values())
    torch.testing.assert_close(slimming, expected)


def test_regenerated_channels_restart_fresh_and_kept_ones_keep_their_weights(monkeypatch):
    """A channel pruned before an update and regenerated by it restarts (zero weights, a new batch norm); a
    channel alive before and after keeps its weights and batch norm, even when the update dropped and
    regenerated it. Criticality is made highest in the pruned channels, so that updates revive some."""
    from ndsnn.sparse.methods import criticality as module

    model, optimizer, method = _setup("criticality", structured=True, total_steps=12, update_interval=2,
                                      regeneration_ratio=0.5)  # fmt: skip
    conv = model.block.conv
    measured = module.channel_criticality

    def silent_channels_first(h: torch.Tensor, lif: LIF) -> torch.Tensor:
        score = measured(h, lif)
        if h.dim() != 5:
            return score
        silent = (h == 0).flatten(3).all(3).all(0).all(0)  # a pruned channel's membrane never moves
        return score + 10.0 * silent.float()

    monkeypatch.setattr(module, "channel_criticality", silent_channels_first)
    revived = kept_through = 0
    for step in range(8):
        x, y = _batch(step)
        optimizer.zero_grad()
        loss, extra = models.per_step_cross_entropy(model(x), y), method.auxiliary_loss(x)
        (loss + extra if extra is not None else loss).backward()
        optimizer.step()
        norm = method.norms.get("block.conv")  # found by the recording forward before each update
        if norm is None:
            method.step()
            continue
        alive = conv.weight_mask.flatten(1).any(1)
        weights, scale, shift = conv.weight.detach().clone(), norm.weight.detach().clone(), norm.bias.detach().clone()
        method.step()
        if method.log and method.log[-1]["step"] == step + 1:
            assert method.log[-1]["regenerated_channels"]["block.conv"] > 0
        now = conv.weight_mask.flatten(1).any(1)
        for c in torch.nonzero(now & ~alive).flatten().tolist():
            assert torch.count_nonzero(conv.weight[c]) == 0 and norm.weight[c] == 1.0 and norm.bias[c] == 0.0
            revived += 1
        for c in torch.nonzero(now & alive).flatten().tolist():
            assert torch.equal(conv.weight[c], weights[c]) and norm.weight[c] == scale[c] and norm.bias[c] == shift[c]
            kept_through += 1
    assert revived > 0 and kept_through > 0


@pytest.mark.parametrize("name", ["convnet", "vgg16", "resnet19"])
def test_shrink_removes_pruned_channels_and_keeps_the_outputs(name):
    torch.manual_seed(3)
    size = 8 if name == "convnet" else 32
    channels = 1 if name == "convnet" else 3
    model = models.create(name, 10, channels, timesteps=2, image_size=size, lif={"v_threshold": 0.3})
    method = create("criticality", model, torch.optim.SGD(model.parameters(), lr=0.1), structured=True,
                    total_steps=4, update_interval=1, sparsity=0.5, regeneration_ratio=0.0)  # fmt: skip
    model.train()
    model(torch.randn(2, channels, size, size))
    method.step_count = 0
    method.recording = True
    method.step()  # one structured update from the recorded forward: half the channels of every block
    model.eval()
    images = torch.randn(3, channels, size, size)
    smaller = models.shrink(model).eval()
    torch.testing.assert_close(smaller(images), model(images), rtol=1e-4, atol=1e-5)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in smaller.parameters())
    assert after < (0.75 if name != "resnet19" else 0.9) * before
