"""A NIR graph (a nir.NIRGraph or a NIR file) as a SpikingGraph of ndsnn modules.

Per node: nir.Conv2d -> SparseSpikingConv2d, nir.Affine / nir.Linear -> SparseLinear (the mask of both is
the weights' nonzero pattern), nir.LIF -> LIF (tau / dt steps; Fire when tau equals dt), nir.AvgPool2d ->
PerFrame(nn.AvgPool2d), nir.SumPool2d -> SumPool2d, nir.Flatten -> FrameFlatten. Other node types, nested
graphs and recurrent edges raise UnsupportedLayerError naming the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.layers import PerFrame
from ..nn import SparseLinear, SparseSpikingConv2d
from .errors import require_nir, unsupported
from .graph import INPUT, OUTPUT, SpikingGraph
from .lif_mapping import DEFAULT_DT, nir_to_lif
from .modules import FrameFlatten, SumPool2d

SUPPORTED = "Input, Output, Conv2d, Affine, Linear, LIF, AvgPool2d, SumPool2d, Flatten"


def _ints(value: Any, count: int = 2) -> tuple[int, ...]:
    array = np.asarray(value).reshape(-1)
    return tuple(int(v) for v in (np.repeat(array, count) if array.size == 1 else array))


def _tensor(array: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float64 if dtype == torch.float64 else np.float32)).to(dtype)


def _weighted(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.set_mask(weight != 0)
    return layer


def _padding(value: Any) -> str | tuple[int, ...]:
    if isinstance(value, bytes):
        value = value.decode()
    return value if isinstance(value, str) else _ints(value)


def _module(node: Any, name: str, dt: float, dtype: torch.dtype) -> nn.Module:
    nir = require_nir()
    if isinstance(node, nir.Conv2d):
        weight = _tensor(node.weight, dtype)
        groups = int(node.groups)
        conv = SparseSpikingConv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                                   _ints(node.stride), _padding(node.padding), _ints(node.dilation), groups,
                                   bias=True, dtype=dtype)  # fmt: skip
        return _weighted(conv, weight, _tensor(node.bias, dtype).reshape(-1))
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _tensor(node.weight, dtype)
        if weight.dim() != 2:
            raise unsupported(name, f"nir.{type(node).__name__}", f"weight of shape {tuple(weight.shape)}, not 2-D")
        has_bias = isinstance(node, nir.Affine)
        linear = SparseLinear(weight.shape[1], weight.shape[0], bias=has_bias, dtype=dtype)
        return _weighted(linear, weight, _tensor(node.bias, dtype).reshape(-1) if has_bias else None)
    if isinstance(node, nir.LIF):
        return nir_to_lif(node, dt, name)
    if isinstance(node, nir.AvgPool2d):
        return PerFrame(nn.AvgPool2d(_ints(node.kernel_size), _ints(node.stride), _ints(node.padding)))
    if isinstance(node, nir.SumPool2d):
        return SumPool2d(_ints(node.kernel_size), _ints(node.stride), _ints(node.padding))
    if isinstance(node, nir.Flatten):
        return FrameFlatten(int(node.start_dim), int(node.end_dim))
    raise unsupported(name, f"nir.{type(node).__name__}", f"ndsnn imports only these node types: {SUPPORTED}")


def _identifier(name: str, taken: set[str]) -> str:
    """A ModuleDict-safe node name: dots become underscores, leading digits and reserved names get a prefix."""
    base = name.replace(".", "_") or "node"
    if base[0].isdigit() or base in (INPUT, OUTPUT):
        base = f"node_{base}"
    candidate, index = base, 2
    while candidate in taken:
        candidate, index = f"{base}_{index}", index + 1
    return candidate


def from_nir(source: Any, *, dt: float | None = None, dtype: torch.dtype = torch.float32) -> SpikingGraph:
    """A SpikingGraph computing the NIR graph `source` (a nir.NIRGraph, or the path of a NIR file).

    dt (seconds per step) defaults to the graph's metadata["dt"], else DEFAULT_DT (1e-4 s)."""
    nir = require_nir()
    graph = nir.read(source) if isinstance(source, str | Path) else source
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"expected a nir.NIRGraph or a NIR file path, got {type(graph).__name__}")
    metadata = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = float(dt if dt is not None else metadata.get("dt", DEFAULT_DT))
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise unsupported("(graph)", "nir.NIRGraph", f"needs one Input and one Output node, got {inputs} and {outputs}")
    names = {inputs[0]: INPUT, outputs[0]: OUTPUT}
    layers: dict[str, nn.Module] = {}
    for name, node in graph.nodes.items():
        if name in names:
            continue
        names[name] = _identifier(name, set(layers))
        layers[names[name]] = _module(node, name, dt, dtype)
    edges = [(names[a], names[b]) for a, b in graph.edges]
    input_shape = tuple(int(d) for d in np.asarray(graph.nodes[inputs[0]].input_type["input"]).reshape(-1))
    timesteps = metadata.get("timesteps")
    return SpikingGraph(layers, edges, input_shape, int(timesteps) if timesteps is not None else None)
