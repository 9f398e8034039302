"""NIR export and import: ndsnn -> NIR -> ndsnn computes the very same outputs, pruned weights are exactly zero
in the graph, the file is what nir.read reads, snnTorch's NIR importer runs the exported graph with the same
spikes, unsupported layers are refused by name, and `ndsnn export --format nir` works on a trained checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ndsnn import models
from ndsnn.cli import main
from ndsnn.models.convnet import SpikingConvNet
from ndsnn.models.layers import PerFrame
from ndsnn.nn import LIF, SparseLinear, SparseSpikingConv2d, masked_modules

nir = pytest.importorskip("nir")

from ndsnn.nir import (  # noqa: E402
    DEFAULT_DT,
    Fire,
    SpikingGraph,
    UnsupportedLayerError,
    export_nir,
    from_nir,
    lif_to_nir,
    lower,
    nir_to_lif,
    to_nir,
    weight_counts,
)

# (model, in_channels, image size): the convnet with one and two max poolings, VGG-16 (five max poolings of
# spikes), ResNet-19 (residual sums, 1x1 shortcut convolutions, global average pooling).
MODELS = [("convnet", 1, 8), ("convnet", 1, 28), ("vgg16", 3, 32), ("resnet19", 3, 8)]


@torch.no_grad()
def lively(model: nn.Module, channels: int, size: int, density: float = 0.2) -> nn.Module:
    """A model in eval mode with random masks, and batch norms whose statistics and affine parameters make
    every layer fire at a rate of about 10-35% (an untrained model is nearly silent, which would make any
    comparison of spikes trivially equal)."""
    for _, layer in masked_modules(model):
        layer.set_mask(torch.rand(layer.weight.shape) < density)
        layer.weight.mul_(2.0 / density**0.5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0  # running statistics = one batch's
            module.weight.uniform_(1.0, 2.0)
            module.bias.uniform_(0.0, 0.5)
    model.train()
    model(torch.rand(8, channels, size, size) * 3)
    return model.eval()


def _model(name: str, channels: int, size: int) -> nn.Module:
    return lively(models.create(name, 10, channels, 2, size), channels, size)


def _images(channels: int, size: int, count: int = 4) -> torch.Tensor:
    return torch.rand(count, channels, size, size) * 3


def _spiking_nodes(graph: SpikingGraph) -> list[str]:
    return [name for name, layer in graph.layers.items() if isinstance(layer, LIF | Fire)]


@pytest.mark.parametrize("name, channels, size", MODELS)
@torch.no_grad()
def test_round_trip_gives_identical_outputs(tmp_path, name, channels, size):
    """model -> lowered graph (batch norm folded) -> NIR file -> nir.read -> ndsnn graph: the graph read back
    computes exactly (torch.equal) the spikes of every neuron layer and the output of the exported one: the
    weights, biases and neuron parameters survive the file bit for bit, and max pooling of spikes, written as
    average pooling and a memoryless threshold, is exact for 0 / 1 input. A second export is a fixed point."""
    model = _model(name, channels, size)
    x = _images(channels, size)
    lowered = lower(model, (channels, size, size))
    export_nir(lowered, tmp_path / "model.nir")
    back = from_nir(nir.read(tmp_path / "model.nir"))
    ours, theirs = lowered.node_outputs(x), back.node_outputs(x)
    assert back.timesteps == model.timesteps == 2
    assert torch.equal(ours["output"], theirs["output"])
    neurons = _spiking_nodes(lowered)
    assert neurons and all(torch.equal(ours[n], theirs[n]) for n in neurons)
    rates = [float(ours[n].mean()) for n in neurons]
    assert min(rates) > 0.005 and max(rates) < 0.6  # the comparison is not between silent networks

    first, second = to_nir(lowered), to_nir(back)
    assert set(first.nodes) == set(second.nodes) and sorted(first.edges) == sorted(second.edges)
    for key, node in first.nodes.items():
        for field in ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset"):
            if hasattr(node, field):
                assert np.array_equal(getattr(node, field), getattr(second.nodes[key], field)), (key, field)


# Float rounding moves a membrane by about 1e-7 relative (currents are O(1), thresholds 1); a spike decision
# that differs because of rounding alone has a membrane within this of the threshold.
ROUNDING_MARGIN = 1e-5


def _explained_by_rounding(agreement) -> None:
    """Every sample where some spike differs has its first difference (in graph order) at a spike decision
    within ROUNDING_MARGIN of the threshold; later layers may then differ more, since a changed spike is a
    full weight's change of current downstream. At least 90% of all spikes agree (measured: all of them, or
    above 99%, in these seeded cases; above 0.9999999 on the trained models of docs/nir.md)."""
    if agreement.samples_with_differences:
        assert agreement.max_first_margin <= ROUNDING_MARGIN, agreement.to_dict()
    assert agreement.overall >= 0.9, agreement.to_dict()


@pytest.mark.parametrize("name, channels, size", MODELS)
@torch.no_grad()
def test_folding_batch_norm_keeps_the_model_outputs(name, channels, size):
    """The lowered graph against the model itself. Folding batch norm into the convolution changes each
    current by float rounding only, so spikes may differ only where rounding decides them; where all spikes
    agree the outputs agree to 1e-4."""
    from ndsnn.nir.snntorch_check import Agreement, outputs_and_margins

    model = _model(name, channels, size)
    x = _images(channels, size, 8)
    graph = lower(model, (channels, size, size))
    recorded = {}

    def keep(key: str):
        return lambda _module, _inputs, out: recorded.setdefault(key, out)

    for path, module in model.named_modules():
        if isinstance(module, LIF):
            module.register_forward_hook(keep(path.replace(".", "_")))
    expected = model(x)
    values, margins = outputs_and_margins(graph, x)
    assert set(recorded) == set(_spiking_nodes(graph))
    agreement = Agreement()
    agreement.update(values, recorded, values["output"], expected, graph.order, margins)
    _explained_by_rounding(agreement)
    if agreement.overall == 1.0:
        torch.testing.assert_close(values["output"], expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_pruned_weights_are_exactly_zero_and_density_is_reported(tmp_path):
    model = _model("convnet", 1, 28)
    report = export_nir(model, tmp_path / "model.nir", (1, 28, 28))
    graph = nir.read(report.path)
    layers = dict(masked_modules(model))
    pairs = {"stem_0": "stem.0.module", "block_conv": "block.conv", "fc1": "fc1", "fc2": "fc2"}
    for node_name, layer_name in pairs.items():
        weight, mask = graph.nodes[node_name].weight, layers[layer_name].weight_mask.numpy()
        assert weight.shape == mask.shape
        assert np.all(weight[~mask] == 0) and not np.signbit(weight[~mask]).any()  # +0.0, not -0.0
        assert np.count_nonzero(weight) == mask.sum()
    kept = sum(int(layer.weight_mask.sum()) for layer in layers.values())
    total = sum(layer.weight_mask.numel() for layer in layers.values())
    assert (report.nonzero, report.total) == (kept, total) == weight_counts(graph)
    assert report.density == pytest.approx(0.2, abs=0.01)


def test_the_file_is_a_nir_graph(tmp_path):
    model = _model("convnet", 1, 28)
    path = export_nir(model, tmp_path / "model.nir", (1, 28, 28)).path
    assert nir.serialization.read_version(path) == nir.version
    graph = nir.read(path)
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert kinds == {"input": "Input", "stem_0": "Conv2d", "stem_lif": "LIF", "pool1": "AvgPool2d",
                     "pool1_fire": "LIF", "block_conv": "Conv2d", "block_lif": "LIF", "pool2": "AvgPool2d",
                     "pool2_fire": "LIF", "flatten": "Flatten", "fc1": "Affine", "fc_lif": "LIF", "fc2": "Affine",
                     "output": "Output"}  # fmt: skip
    assert list(graph.nodes["input"].input_type["input"]) == [1, 28, 28]
    assert list(graph.nodes["output"].output_type["output"]) == [10]
    assert graph.metadata["dt"] == DEFAULT_DT and graph.metadata["timesteps"] == 2
    lif = graph.nodes["stem_lif"]
    assert lif.tau.shape == (32, 28, 28)
    np.testing.assert_allclose(lif.tau, 4.0 / 3.0 * DEFAULT_DT, rtol=1e-15)
    assert np.all(lif.r == 1) and np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)
    below = lambda t: float(np.nextafter(np.float32(t), np.float32(0)))  # noqa: E731
    assert np.all(lif.v_threshold == below(1.0))  # NIR fires at v > 0.99999994: ndsnn's h >= 1 in float32
    fire = graph.nodes["pool1_fire"]
    assert np.all(fire.tau == DEFAULT_DT) and np.all(fire.v_threshold == below(0.125))


def test_lif_mapping_of_every_option():
    """tau in steps * dt = tau in seconds; r = 1 with decay_input, tau / dt without; v_leak = v_reset; learned
    and per-channel parameters; and back to the same ndsnn neuron."""
    dt = 1e-3
    lif = LIF(tau=3.0, v_threshold=0.7, v_reset=-0.25, decay_input=False, num_channels=4, learnable_threshold=True)
    with torch.no_grad():
        lif.threshold.copy_(torch.tensor([0.5, 0.6, 0.7, 0.8]))
    node = lif_to_nir(lif, (4, 3, 3), dt, "layer")
    np.testing.assert_allclose(node.tau, 3e-3)
    np.testing.assert_allclose(node.r, 3.0)
    assert np.all(node.v_leak == -0.25) and np.all(node.v_reset == -0.25)
    np.testing.assert_allclose(node.v_threshold[:, 1, 2], [0.5, 0.6, 0.7, 0.8], rtol=2e-7)
    assert np.all(node.v_threshold[:, 1, 2] < np.float32([0.5, 0.6, 0.7, 0.8]))  # v > t: the float32 below
    back = nir_to_lif(node, dt, "layer")
    assert isinstance(back, LIF) and not back.decay_input and back.v_reset == -0.25
    assert back.tau == pytest.approx(3.0)
    torch.testing.assert_close(back.v_threshold, lif.v_threshold.detach())
    x = torch.randn(5, 2, 4, 3, 3)
    assert torch.equal(back(x), lif(x))
    learned = LIF(tau=2.0)
    learned.make_learnable()
    with torch.no_grad():
        learned.tau_logit.fill_(0.3)
    again = nir_to_lif(lif_to_nir(learned, (6,), DEFAULT_DT, "fc"), DEFAULT_DT, "fc")
    assert torch.equal(torch.tensor(again.tau, dtype=torch.float32), learned.tau.detach())
    x = torch.randn(7, 3, 6)
    assert torch.equal(again(x), learned(x))


@torch.no_grad()
def test_sequential_models_with_every_supported_layer(tmp_path):
    """A plain nn.Sequential of multi-step layers: per-channel learned neurons, decay_input=False, nonzero
    v_reset, average and adaptive pooling, BatchNorm1d folded into a linear layer, a linear layer without bias."""
    net = nn.Sequential(
        SparseSpikingConv2d(2, 6, 3, stride=2, padding=1),
        PerFrame(nn.BatchNorm2d(6)),
        LIF(tau=2.5, v_threshold=0.8, num_channels=6, learnable_threshold=True, learnable_tau=True),
        PerFrame(nn.AvgPool2d(2)),
        PerFrame(nn.Conv2d(6, 8, 1)),
        LIF(tau=1.5, v_reset=0.1, decay_input=False),
        PerFrame(nn.AdaptiveAvgPool2d(1)),
        PerFrame(nn.Flatten()),
        SparseLinear(8, 12, bias=False),
        PerFrame(nn.BatchNorm1d(12)),
        LIF(),
        nn.Linear(12, 3, bias=False),
    )
    for module in net.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.uniform_(1.0, 3.0)
            module.bias.uniform_(0.0, 1.0)
    net[2].threshold.uniform_(0.5, 1.0)
    net.eval()
    x = torch.rand(4, 3, 2, 8, 8) * 4  # frames [T, N, C, H, W]: a sequence, not a static image
    graph = lower(net, (2, 8, 8))
    torch.testing.assert_close(graph(x), net(x), rtol=1e-5, atol=1e-5)
    export_nir(graph, tmp_path / "net.nir")
    back = from_nir(tmp_path / "net.nir")
    assert torch.equal(back(x), graph(x))
    kinds = {name: type(node).__name__ for name, node in nir.read(tmp_path / "net.nir").nodes.items()}
    assert kinds["layer_8"] == "Affine" and kinds["layer_11"] == "Linear"  # batch norm brought a bias


def _error(model: nn.Module, shape=(1, 8, 8)) -> str:
    with pytest.raises(UnsupportedLayerError) as caught:
        to_nir(model, shape)
    return str(caught.value)


def test_unsupported_layers_are_refused_by_name():
    conv = lambda: SparseSpikingConv2d(1, 4, 3, padding=1)  # noqa: E731
    message = _error(nn.Sequential(conv(), LIF(v_reset=None)))
    assert "'1'" in message and "v_reset=None" in message and "soft reset" in message
    message = _error(nn.Sequential(conv(), PerFrame(nn.ReLU())))
    assert "'1'" in message and "ReLU" in message
    message = _error(nn.Sequential(conv(), PerFrame(nn.MaxPool2d(2))))
    assert "MaxPool2d" in message and "not spikes" in message
    message = _error(nn.Sequential(conv(), LIF(), PerFrame(nn.MaxPool2d(2, ceil_mode=True))))
    assert "ceil_mode" in message
    message = _error(nn.Sequential(conv(), LIF(), PerFrame(nn.BatchNorm2d(4))))
    assert "BatchNorm2d" in message and "directly follow" in message
    message = _error(nn.Sequential(SparseSpikingConv2d(1, 4, 3, padding=1, padding_mode="reflect"), LIF()))
    assert "padding_mode='reflect'" in message

    class Custom(SpikingConvNet):  # a subclass may compute anything in forward: not guessed at
        pass

    message = _error(Custom(image_size=8))
    assert "Custom" in message and "SpikingConvNet" in message


def test_unsupported_nir_nodes_are_refused_by_name():
    shape = np.array([3])
    cuba = nir.CubaLIF(tau_syn=np.full(3, 2e-4), tau_mem=np.full(3, 2e-4), r=np.ones(3), v_leak=np.zeros(3),
                       v_threshold=np.ones(3))  # fmt: skip
    graph = nir.NIRGraph(nodes={"input": nir.Input(shape), "syn": cuba, "output": nir.Output(shape)},
                         edges=[("input", "syn"), ("syn", "output")])  # fmt: skip
    with pytest.raises(UnsupportedLayerError, match="nir.CubaLIF at 'syn'"):
        from_nir(graph)
    lif = nir.LIF(tau=np.full(3, 2e-4), r=np.full(3, 5.0), v_leak=np.zeros(3), v_threshold=np.ones(3))
    graph = nir.NIRGraph(nodes={"input": nir.Input(shape), "neuron": lif, "output": nir.Output(shape)},
                         edges=[("input", "neuron"), ("neuron", "output")])  # fmt: skip
    with pytest.raises(UnsupportedLayerError, match="nir.LIF at 'neuron'.*r must be 1"):
        from_nir(graph)
    weight = nir.Linear(weight=np.eye(3))
    lif = nir.LIF(tau=np.full(3, 2e-4), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))
    graph = nir.NIRGraph(nodes={"input": nir.Input(shape), "w": weight, "neuron": lif, "output": nir.Output(shape)},
                         edges=[("input", "neuron"), ("neuron", "w"), ("w", "neuron"), ("neuron", "output")],
                         type_check=False)  # fmt: skip
    with pytest.raises(UnsupportedLayerError, match="recurrent"):
        from_nir(graph)


def _snntorch_module(graph):
    pytest.importorskip("snntorch")
    from ndsnn.nir.snntorch_check import import_into_snntorch

    return import_into_snntorch(graph)


def test_snntorch_reads_the_neurons_as_intended():
    """snnTorch's importer assumes dt = 1e-4 s and maps nir.LIF to Leaky(beta = 1 - dt / tau, threshold =
    v_threshold / (r dt / tau), reset to zero): for our default neurons (tau 4/3 steps) beta = 1 - 1 / tau =
    0.25 and its membrane is ours scaled by tau, against a threshold scaled alike; max pooling's memoryless
    neuron has beta 0."""
    import snntorch

    model = _model("convnet", 1, 28)
    leaky = {n: m for n, m in _snntorch_module(to_nir(model, (1, 28, 28))).named_modules()
             if isinstance(m, snntorch.Leaky)}  # fmt: skip
    assert set(leaky) == {"stem_lif", "pool1_fire", "block_lif", "pool2_fire", "fc_lif"}
    assert torch.allclose(leaky["stem_lif"].beta, torch.tensor(0.25))
    assert float(leaky["stem_lif"].threshold) == pytest.approx(4.0 / 3.0, rel=1e-6)
    assert leaky["stem_lif"].reset_mechanism == "zero"
    assert torch.all(leaky["pool1_fire"].beta == 0) and float(leaky["pool1_fire"].threshold) == pytest.approx(0.125)

    per_channel = nn.Sequential(SparseSpikingConv2d(1, 3, 3), LIF(num_channels=3, learnable_tau=True))
    with torch.no_grad():
        per_channel[1].tau_logit.copy_(torch.tensor([0.0, 0.5, 1.0]))
    graph = to_nir(per_channel, (1, 5, 5))
    assert from_nir(graph).layers["layer_1"].tau_values is not None  # ndsnn reads it, per channel
    with pytest.raises(UnsupportedLayerError, match="snnTorch.*'layer_1'.*per-channel leak"):
        _snntorch_module(graph)  # snnTorch would scale every channel's threshold by one channel's tau


@pytest.mark.parametrize("name, channels, size", MODELS)
@torch.no_grad()
def test_snntorch_runs_the_exported_graph_with_the_same_spikes(tmp_path, name, channels, size):
    """The written file, read by nir.read and imported by snnTorch (snntorch.import_nir), run on the same
    images as ndsnn. Both compute the same recurrence (snnTorch's membrane is tau x ours, its threshold tau x
    ours) but not the same float operations (snnTorch also convolves one unbatched frame at a time, with other
    summation orders), and snnTorch fires at v > threshold where ndsnn fires at h >= threshold; so spikes can
    differ only where a decision is within float rounding of the threshold: checked as in the batch-norm test.
    Max pooling's memoryless neurons decide on multiples of 1/4 against 1/8: never close."""
    from ndsnn.nir.snntorch_check import compare_with_snntorch

    pytest.importorskip("snntorch")
    model = _model(name, channels, size)
    path = export_nir(model, tmp_path / "model.nir", (channels, size, size)).path
    graph = from_nir(path)
    agreement = compare_with_snntorch(graph, nir.read(path), _images(channels, size))
    assert set(agreement.spikes) == set(_spiking_nodes(graph))
    _explained_by_rounding(agreement)
    assert not any(name.endswith("_fire") for name in agreement.first_layers)
    if agreement.overall == 1.0:
        assert agreement.max_output_difference < 1e-4 and agreement.predictions == 1.0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    args = ["train", "--epochs", "1", "--train-samples", "64", "--timesteps", "2", "--no-progress", "--no-plots"]
    assert main([*args, "--out", str(out), "--json"]) == 0
    return out / "checkpoint.pt"


def test_export_command_writes_nir(tiny_checkpoint, tmp_path, capsys):
    from ndsnn.train import load_model

    capsys.readouterr()
    target = tmp_path / "model.nir"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--format", "nir", "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {target}") and "density" in printed and "nonzero" in printed
    graph = nir.read(target)
    assert graph.metadata["timesteps"] == 2 and graph.metadata["dt"] == DEFAULT_DT
    model, spec, _ = load_model(tiny_checkpoint, torch.device("cpu"))
    model.eval()
    images = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(from_nir(target)(images), lower(model, (1, 8, 8))(images))
    nonzero, total = weight_counts(graph)
    assert f"{nonzero:,} of {total:,}" in printed and f"{100 * nonzero / total:.2f}%" in printed
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "c.pt")]) == 0
    assert "density" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, fragment",
    [(["--format", "compact", "--dt", "0.001"], "--dt applies to --format nir only"),
     (["--format", "nir", "--dt", "0"], "--dt must be a positive number"),
     (["--format", "nir", "--dt", "nan"], "--dt must be a positive number")],
)  # fmt: skip
def test_export_command_errors(tiny_checkpoint, tmp_path, capsys, extra, fragment):
    argv = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "x"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ndsnn export: error: ") and fragment in err and err.count("\n") == 1


def test_export_command_names_an_unsupported_layer(tmp_path, capsys, monkeypatch):
    """A checkpoint whose neurons soft-reset: one line naming the layer, exit code 2, no file."""
    import ndsnn.train.evaluate as evaluate

    soft = models.create("convnet", 10, 1, 2, 8, lif={"v_reset": None})
    monkeypatch.setattr(evaluate, "load_model", lambda *a: (soft, {"name": "convnet", "num_classes": 10,
                        "in_channels": 1, "timesteps": 2, "image_size": 8}, "digits"))  # fmt: skip
    monkeypatch.setattr("ndsnn.train.load_model", evaluate.load_model)
    target = tmp_path / "model.nir"
    assert main(["export", "--checkpoint", "any.pt", "--format", "nir", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ndsnn export: error: cannot convert LIF(v_reset=None) at 'stem_lif'")
    assert not target.exists()
