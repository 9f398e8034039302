"""``SpikingGraph``: a spiking network as a graph of ndsnn modules, what NIR graphs are imported into and
what models are lowered to before export.

Nodes are multi-step modules ([T, N, ...] in and out); an edge (a, b) feeds a's output to b, and a node with
several inputs receives their sum (NIR's rule). The reserved names "input" and "output" are the graph's one
input (a frame of input_shape, without batch) and one output."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..nn import LIF
from .errors import UnsupportedLayerError

INPUT, OUTPUT = "input", "output"


def _topological_order(names: Iterable[str], edges: list[tuple[str, str]]) -> list[str]:
    """The nodes in an order where every node comes after its inputs; raises for a cycle (recurrence)."""
    names = list(names)
    pending = {name: 0 for name in [*names, OUTPUT]}
    for _, target in edges:
        pending[target] += 1
    ready = [INPUT]
    order = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for source, target in edges:
            if source == name:
                pending[target] -= 1
                if pending[target] == 0:
                    ready.append(target)
    missing = [name for name in names if name not in order]
    if missing:
        raise UnsupportedLayerError(
            f"cannot run nodes {', '.join(repr(m) for m in missing)}: they are unreachable from the input or in a "
            "cycle (recurrent connections are not supported)"
        )
    return [name for name in order if name not in (INPUT, OUTPUT)]


class SpikingGraph(nn.Module):
    """A feed-forward spiking network as named multi-step modules and edges.

    forward(x) takes a sequence of frames [T, N, *input_shape], or a static input [N, *input_shape] that is
    presented at each of `timesteps` steps (direct encoding: the nodes before the first neuron run once and
    their output is repeated, as in ndsnn.models). It returns the output node's value [T, N, ...].
    """

    def __init__(self, layers: dict[str, nn.Module], edges: list[tuple[str, str]], input_shape: tuple[int, ...],
                 timesteps: int | None = None, origins: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__()
        for name in layers:
            if name in (INPUT, OUTPUT) or "." in name or not name:
                raise ValueError(f"node name {name!r} is reserved or not a valid module name")
        known = {INPUT, OUTPUT, *layers}
        for source, target in edges:
            if source not in known or target not in known or source == OUTPUT or target == INPUT:
                raise ValueError(f"edge ({source!r}, {target!r}) does not connect known nodes in a valid direction")
        self.layers = nn.ModuleDict(layers)
        self.edges = [(str(a), str(b)) for a, b in edges]
        self.input_shape = tuple(int(d) for d in input_shape)
        self.timesteps = timesteps
        self.origins = dict(origins or {})  # node -> the model's module path it came from, for messages
        self.order = _topological_order(layers, self.edges)
        self.sources = {name: [a for a, b in self.edges if b == name] for name in [*self.order, OUTPUT]}
        if len(self.sources[OUTPUT]) != 1:
            raise UnsupportedLayerError(f"a graph needs exactly one edge into '{OUTPUT}', got {self.sources[OUTPUT]}")

    def forward(self, x: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        return self.node_outputs(x, timesteps)[OUTPUT]

    def origin(self, name: str) -> str:
        """Where node `name` came from: the model's module path, or the node name itself."""
        return self.origins.get(name, name)

    def node_outputs(self, x: torch.Tensor, timesteps: int | None = None) -> dict[str, torch.Tensor]:
        """Every node's output [T, N, ...] (and "output"), for inspection and comparisons."""
        frame_dims = len(self.input_shape)
        if tuple(x.shape[-frame_dims:]) != self.input_shape or x.dim() not in (frame_dims + 1, frame_dims + 2):
            raise ValueError(
                f"input must be [T, N, {', '.join(map(str, self.input_shape))}] or [N, ...] with timesteps; "
                f"got shape {tuple(x.shape)}"
            )
        steps = None
        if x.dim() == frame_dims + 1:
            steps = timesteps if timesteps is not None else self.timesteps
            if not isinstance(steps, int) or steps < 1:
                raise ValueError("a static input [N, ...] needs timesteps (a positive int) or the graph's own")
            x = x.unsqueeze(0)  # one frame stands for all steps while it stays the same
        values: dict[str, torch.Tensor] = {INPUT: x}
        static = {INPUT: steps is not None}

        def expanded(name: str) -> torch.Tensor:
            value = values[name]
            return value.expand(steps, *value.shape[1:]) if static[name] else value

        for name in [*self.order, OUTPUT]:
            sources = self.sources[name]
            is_static = all(static[s] for s in sources)
            inputs = [values[s] if is_static else expanded(s) for s in sources]
            total = inputs[0]
            for other in inputs[1:]:
                total = total + other
            if name == OUTPUT:
                values[name], static[name] = total, is_static
                break
            layer = self.layers[name]
            if isinstance(layer, LIF) and is_static:  # neurons integrate over time: they need every step
                total, is_static = total.expand(steps, *total.shape[1:]), False
            values[name], static[name] = layer(total), is_static
        return {name: expanded(name) if static[name] else values[name] for name in values}
