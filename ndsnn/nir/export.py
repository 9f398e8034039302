"""A SpikingGraph (or a model, lowered first) as a nir.NIRGraph, and written to a NIR (HDF5) file.

Per node: SparseSpikingConv2d -> nir.Conv2d, SparseLinear -> nir.Affine (nir.Linear without bias), LIF ->
nir.LIF (lif_mapping), average pooling -> nir.AvgPool2d, FrameFlatten -> nir.Flatten. Max pooling of spikes
becomes nir.AvgPool2d followed by a memoryless nir.LIF (tau = dt) that fires when the window holds a spike,
which is exact for binary input; max pooling of anything else is refused. Pruned weights are exactly 0."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .. import __version__
from ..models.layers import PerFrame
from ..nn import LIF, SparseLinear, SparseSpikingConv2d
from .errors import describe, require_nir, unsupported
from .graph import INPUT, OUTPUT, SpikingGraph
from .lif_mapping import DEFAULT_DT, fire_to_nir, lif_to_nir
from .lower import lower
from .modules import Fire, FrameFlatten, SumPool2d

FIRE_SUFFIX = "_fire"


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the file, its node count and the weights' nonzeros (density = nonzero / total)."""

    path: Path
    nodes: int
    nonzero: int
    total: int
    dt: float

    @property
    def density(self) -> float:
        return self.nonzero / max(1, self.total)


def weight_counts(graph: Any) -> tuple[int, int]:
    """(nonzero, total) weights over the graph's Conv2d / Affine / Linear nodes, nested graphs included."""
    nir = require_nir()
    nonzero = total = 0
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            sub = weight_counts(node)
            nonzero, total = nonzero + sub[0], total + sub[1]
        elif isinstance(node, (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear)):
            nonzero += int(np.count_nonzero(node.weight))
            total += int(np.size(node.weight))
    return nonzero, total


def _array(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    return (tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()).numpy().copy()


def _masked_weight(layer: nn.Module) -> np.ndarray:
    weight = layer.weight.detach()
    mask = getattr(layer, "weight_mask", None)
    if isinstance(mask, torch.Tensor):
        weight = torch.where(mask.bool(), weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    return _array(weight)


def _conv_padding(conv: nn.Conv2d, where: str) -> tuple[int, int]:
    if conv.padding_mode != "zeros":
        raise unsupported(where, describe(conv), f"padding_mode={conv.padding_mode!r}; NIR pads with zeros")
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        if any(t % 2 for t in totals):
            raise unsupported(where, describe(conv), "'same' padding here is uneven; NIR pads both sides alike")
        return (totals[0] // 2, totals[1] // 2)
    return tuple(int(p) for p in conv.padding)


def _emits_spikes(graph: SpikingGraph, name: str) -> bool:
    """Whether node `name` outputs only 0 and 1 (neurons, and max pooling or flattening of their spikes)."""
    if name == INPUT:
        return False
    layer = graph.layers[name]
    if isinstance(layer, (LIF, Fire)):
        return True
    passes = isinstance(layer, FrameFlatten) or (isinstance(layer, PerFrame) and isinstance(layer.module, nn.MaxPool2d))
    return passes and all(_emits_spikes(graph, s) for s in graph.sources[name])


def _pool_nodes(graph: SpikingGraph, name: str, pool: nn.Module, shapes: tuple[tuple[int, ...], tuple[int, ...]],
                dt: float) -> list:  # fmt: skip
    """The NIR node(s) of a per-frame pooling layer; shapes are its input and output frames (C, H, W)."""
    nir = require_nir()
    kind = nn.MaxPool2d if isinstance(pool, nn.MaxPool2d) else type(pool)  # ndsnn.nn.MaxPool2d too
    (in_shape, out_shape), where = shapes, graph.origin(name)
    if kind is nn.AdaptiveAvgPool2d:
        outputs = [o if o is not None else s for o, s in zip(_pair(pool.output_size), in_shape[1:], strict=True)]
        if any(s % o for s, o in zip(in_shape[1:], outputs, strict=True)):
            raise unsupported(where, describe(pool), f"input {in_shape[1:]} is not a multiple of the output size")
        kernel = np.array([s // o for s, o in zip(in_shape[1:], outputs, strict=True)])
        return [nir.AvgPool2d(kernel_size=kernel, stride=kernel.copy(), padding=np.zeros(2, dtype=np.int64))]
    if kind not in (nn.AvgPool2d, nn.MaxPool2d):
        raise unsupported(where, describe(pool), "no NIR pooling node")
    kernel, padding = np.array(_pair(pool.kernel_size)), np.array(_pair(pool.padding))
    stride = np.array(_pair(pool.stride if pool.stride is not None else pool.kernel_size))
    if pool.ceil_mode:
        raise unsupported(where, describe(pool), "ceil_mode=True has no NIR form")
    if kind is nn.AvgPool2d:
        if pool.divisor_override is not None or (padding.any() and not pool.count_include_pad):
            raise unsupported(where, describe(pool), "NIR averages over the whole window, padding included")
        return [nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=padding)]
    if _pair(pool.dilation) != (1, 1) or pool.return_indices:
        raise unsupported(where, describe(pool), "dilation and return_indices have no NIR form")
    if not all(_emits_spikes(graph, s) for s in graph.sources[name]):
        raise unsupported(where, describe(pool), "NIR has no max pooling; ndsnn writes max pooling of spikes (0 / 1) "
                          "exactly as average pooling and a threshold, but this input is not spikes")  # fmt: skip
    fire = Fire(v_threshold=0.5 / float(kernel.prod()))  # a window with any spike averages >= 1 / (kh * kw)
    return [nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=padding), fire_to_nir(fire, out_shape, dt)]


def _nodes(graph: SpikingGraph, name: str, shapes: tuple[tuple[int, ...], tuple[int, ...]], dt: float) -> list:
    """The NIR node(s) of graph node `name`, in order (a chain)."""
    nir = require_nir()
    layer, in_shape, where = graph.layers[name], shapes[0], graph.origin(name)
    if type(layer) in (SparseSpikingConv2d, nn.Conv2d):
        bias = _array(layer.bias) if layer.bias is not None else np.zeros(layer.out_channels, dtype=np.float32)
        return [nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_masked_weight(layer), stride=tuple(layer.stride),
                           padding=_conv_padding(layer, where), dilation=tuple(layer.dilation), groups=layer.groups,
                           bias=bias)]  # fmt: skip
    if type(layer) in (SparseLinear, nn.Linear):
        if len(in_shape) != 1:
            raise unsupported(where, describe(layer), f"NIR's Affine takes flat frames, not {in_shape}: flatten first")
        if layer.bias is None:
            return [nir.Linear(weight=_masked_weight(layer))]
        return [nir.Affine(weight=_masked_weight(layer), bias=_array(layer.bias))]
    if type(layer) is LIF:
        return [lif_to_nir(layer, in_shape, dt, where)]
    if type(layer) is Fire:
        return [fire_to_nir(layer, in_shape, dt)]
    if type(layer) is FrameFlatten:
        return [nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=layer.start_dim, end_dim=layer.end_dim)]
    if type(layer) is SumPool2d:
        return [nir.SumPool2d(kernel_size=np.array(layer.kernel_size), stride=np.array(layer.stride),
                              padding=np.array(layer.padding))]  # fmt: skip
    if type(layer) is PerFrame:
        return _pool_nodes(graph, name, layer.module, shapes, dt)
    raise unsupported(where, describe(layer), "it has no NIR counterpart in ndsnn's export")


@torch.no_grad()
def frame_shapes(graph: SpikingGraph) -> dict[str, tuple[int, ...]]:
    """The frame shape (without T and N) of every node's output, found by running one zero frame."""
    reference = next(iter(graph.parameters()), None)
    options = {"dtype": reference.dtype, "device": reference.device} if reference is not None else {}
    outputs = graph.node_outputs(torch.zeros(1, 1, *graph.input_shape, **options))
    return {name: tuple(value.shape[2:]) for name, value in outputs.items()}


def to_nir(model: nn.Module, input_shape: tuple[int, ...] | None = None, *, dt: float = DEFAULT_DT,
           timesteps: int | None = None) -> Any:  # fmt: skip
    """The nir.NIRGraph of `model` (a SpikingGraph, or a model that lower() supports, in eval semantics).

    input_shape is one input frame without batch, e.g. (C, H, W) (needed unless model is a SpikingGraph);
    dt is the step in seconds that NIR time constants refer to. The graph's metadata holds dt, the number of
    steps a static input is presented (timesteps) and the producer."""
    nir = require_nir()
    if not (isinstance(dt, float | int) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if not isinstance(model, SpikingGraph):
        if input_shape is None:
            raise ValueError("input_shape (one frame without batch, e.g. (C, H, W)) is needed to export a model")
        model = lower(model, input_shape, timesteps)
    graph = model
    shapes = frame_shapes(graph)
    nodes: dict[str, Any] = {INPUT: nir.Input(input_type={"input": np.array(graph.input_shape)})}
    edges: list[tuple[str, str]] = []
    exit_of = {INPUT: INPUT}
    for name in graph.order:
        inputs = [shapes[s] for s in graph.sources[name]]
        chain = _nodes(graph, name, (inputs[0], shapes[name]), float(dt))
        names = [name] + [f"{name}{FIRE_SUFFIX}" if i == 1 else f"{name}_{i}" for i in range(1, len(chain))]
        nodes.update(zip(names, chain, strict=True))
        edges.extend(zip(names, names[1:], strict=False))
        edges.extend((exit_of[s], name) for s in graph.sources[name])
        exit_of[name] = names[-1]
    nodes[OUTPUT] = nir.Output(output_type={"output": np.array(shapes[OUTPUT])})
    edges.extend((exit_of[s], OUTPUT) for s in graph.sources[OUTPUT])
    metadata: dict[str, Any] = {"producer": "ndsnn", "ndsnn_version": __version__, "dt": float(dt)}
    steps = timesteps if timesteps is not None else graph.timesteps
    if steps is not None:
        metadata["timesteps"] = int(steps)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(graph: Any, path: str | Path) -> Path:
    """Writes a nir.NIRGraph to `path` (HDF5, via nir.write) atomically: the old file or the new one, never half."""
    nir = require_nir()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        nir.write(temporary, graph)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def export_nir(model: nn.Module, path: str | Path, input_shape: tuple[int, ...] | None = None, *,
               dt: float = DEFAULT_DT, timesteps: int | None = None) -> ExportReport:  # fmt: skip
    """Writes `model` as a NIR file (see to_nir); returns what was written, with the weights' density."""
    graph = to_nir(model, input_shape, dt=dt, timesteps=timesteps)
    written = write_nir(graph, path)
    nonzero, total = weight_counts(graph)
    return ExportReport(written, len(graph.nodes), nonzero, total, float(dt))
