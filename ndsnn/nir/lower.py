"""Lowering: an ndsnn model to a SpikingGraph of the layers NIR can express, with batch norm folded into the
convolution or linear layer before it (eval-mode statistics).

Supported: ndsnn.models' SpikingConvNet, SpikingVGG16 and SpikingResNet19 (exactly these classes: a
subclass may compute something else), and nn.Sequential of multi-step layers: SparseSpikingConv2d,
SparseLinear, nn.Linear, LIF, and per frame (inside PerFrame) nn.Conv2d, BatchNorm1d/2d, MaxPool2d,
AvgPool2d, AdaptiveAvgPool2d, Flatten; nn.Identity anywhere. Anything else raises UnsupportedLayerError
naming the layer's path."""

from __future__ import annotations

import copy

from torch import nn

from ..models.convnet import SpikingConvNet
from ..models.layers import ConvBNLIF, PerFrame
from ..models.resnet import SpikingBasicBlock, SpikingResNet19
from ..models.vgg import SpikingVGG16
from ..nn import LIF, SparseLinear, SparseSpikingConv2d
from .errors import describe, unsupported
from .fold import NORMS, fold
from .graph import INPUT, OUTPUT, SpikingGraph
from .modules import FrameFlatten

WEIGHTED = (nn.Conv2d, SparseSpikingConv2d, nn.Linear, SparseLinear)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


class _Builder:
    """Collects nodes and edges; remembers which weighted layers a batch norm may still be folded into."""

    def __init__(self) -> None:
        self.layers: dict[str, nn.Module] = {}
        self.edges: list[tuple[str, str]] = []
        self.unfolded: dict[str, nn.Module] = {}
        self.origins: dict[str, str] = {}

    def add(self, path: str, module: nn.Module, sources: list[str]) -> str:
        base = path.replace(".", "_") or "layer"
        base = f"layer_{base}" if base[0].isdigit() else base  # node names must be identifiers
        name, index = base, 2
        while name in self.layers:
            name, index = f"{base}_{index}", index + 1
        self.layers[name] = module
        self.origins[name] = path
        self.edges.extend((source, name) for source in sources)
        return name

    def fold_norm(self, source: str, norm: nn.Module, path: str) -> str:
        layer = self.unfolded.pop(source, None)
        if layer is None or any(a == source for a, _ in self.edges):
            raise unsupported(path, describe(norm), "batch norm must directly follow a convolution or linear layer")
        self.layers[source] = fold(layer, norm, path)
        return source


def _lower(b: _Builder, module: nn.Module, path: str, source: str, per_frame: bool) -> str:
    """Adds `module` (at `path`, reading node `source`) to the graph; returns the node that holds its output."""
    kind = type(module)
    if kind is nn.Identity:
        return source
    if kind is nn.Sequential:
        for index, child in module.named_children():
            source = _lower(b, child, f"{path}.{index}" if path else index, source, per_frame)
        return source
    if kind is PerFrame:
        return _lower(b, module.module, path, source, True)
    if kind is ConvBNLIF:
        source = _lower(b, module.conv, f"{path}.conv", source, per_frame)
        source = _lower(b, module.bn, f"{path}.bn", source, per_frame)
        return _lower(b, module.lif, f"{path}.lif", source, per_frame)
    if kind is SpikingBasicBlock:
        main = _lower(b, module.conv_bn_lif, f"{path}.conv_bn_lif", source, per_frame)
        main = _lower(b, module.conv, f"{path}.conv", main, per_frame)
        main = _lower(b, module.bn, f"{path}.bn", main, per_frame)
        shortcut = _lower(b, module.shortcut, f"{path}.shortcut", source, per_frame)
        return b.add(f"{path}.lif", copy.deepcopy(module.lif), [main, shortcut])
    if kind in WEIGHTED:
        if kind in (nn.Conv2d,) and not per_frame:
            raise unsupported(path, describe(module), "nn.Conv2d on a [T, N, ...] sequence needs PerFrame")
        name = b.add(path, fold(module, None, path), [source])
        b.unfolded[name] = module
        return name
    if kind in NORMS:
        if not per_frame:
            raise unsupported(path, describe(module), "batch norm on a [T, N, ...] sequence needs PerFrame")
        return b.fold_norm(source, module, path)
    if kind is LIF:
        if per_frame:
            raise unsupported(path, describe(module), "a LIF inside PerFrame would take the batch for time")
        return b.add(path, copy.deepcopy(module), [source])
    if kind in POOLS or isinstance(module, nn.MaxPool2d):  # ndsnn.nn.MaxPool2d too
        if not per_frame:
            raise unsupported(path, describe(module), "pooling a [T, N, ...] sequence needs PerFrame")
        return b.add(path, PerFrame(copy.deepcopy(module)), [source])
    if kind is nn.Flatten:
        if not per_frame or module.start_dim < 1 or 0 <= module.end_dim < module.start_dim:
            raise unsupported(path, describe(module), "only per-frame flattening (PerFrame, start_dim >= 1) exists")
        end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
        return b.add(path, FrameFlatten(module.start_dim - 1, end), [source])
    raise unsupported(path or "(model)", describe(module), "it has no NIR counterpart in ndsnn's export")


def _classifier(b: _Builder, model: nn.Module, parts: list[str]) -> str:
    """The models' common shape: stem, neurons and layers in order, with the frame flattened before `fc`."""
    source = INPUT
    for part in parts:
        if part == "flatten":
            source = b.add("flatten", FrameFlatten(0, -1), [source])
        else:
            source = _lower(b, getattr(model, part), part, source, False)
    return source


MODEL_PARTS: dict[type, list[str]] = {
    SpikingConvNet: ["stem", "stem_lif", "pool1", "block", "pool2", "flatten", "fc1", "fc_lif", "fc2"],
    SpikingVGG16: ["stem", "stem_lif", "features", "flatten", "classifier"],
    SpikingResNet19: ["stem", "stem_lif", "stages", "pool", "flatten", "fc1", "fc_lif", "fc2"],
}


def lower(model: nn.Module, input_shape: tuple[int, ...], timesteps: int | None = None) -> SpikingGraph:
    """The SpikingGraph equal to `model` in eval mode; input_shape is one frame without batch, e.g. (C, H, W).
    timesteps defaults to the model's own (ndsnn.models) and is kept for static inputs."""
    if isinstance(model, SpikingGraph):
        return model
    b = _Builder()
    kind = type(model)
    if kind in MODEL_PARTS:
        source = _classifier(b, model, MODEL_PARTS[kind])
        timesteps = timesteps if timesteps is not None else model.timesteps
    elif kind is nn.Sequential:
        source = _lower(b, model, "", INPUT, False)
    else:
        supported = ", ".join(t.__name__ for t in MODEL_PARTS)
        raise unsupported("(model)", kind.__name__, f"export supports {supported} and nn.Sequential of ndsnn layers")
    if source == INPUT:
        raise unsupported("(model)", kind.__name__, "it has no layers")
    b.edges.append((source, OUTPUT))
    return SpikingGraph(b.layers, b.edges, tuple(input_shape), timesteps, b.origins)
