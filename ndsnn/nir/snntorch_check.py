"""Running an exported NIR graph in snnTorch (its NIR importer, snntorch.import_nir) beside ndsnn, and how
closely the two agree. Needs snntorch (the `peers` extra).

NIR shapes have no batch dim, and snnTorch maps nir.Flatten(start_dim=0) to torch.nn.Flatten(0, -1), which
would fold a batch into the features; so samples run one at a time, unbatched, as NIR describes them."""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..nn import LIF
from ..ops.lif_reference import broadcast_param
from .errors import UnsupportedLayerError
from .graph import OUTPUT, SpikingGraph
from .modules import Fire

SNNTORCH_DT = 1e-4  # the step snnTorch's importer assumes for every nir.LIF


def import_into_snntorch(graph: Any) -> torch.nn.Module:
    """snnTorch's module for a nir.NIRGraph (its importer prints notes on stdout; they are silenced).

    snnTorch 1.0's importer scales each layer's threshold by one value of r * dt / tau (the smallest), which
    is wrong for a layer whose neurons have different ones (per-channel leak): such graphs are refused here
    rather than run wrongly. Its own asserts refuse v_leak != 0 and thresholds that differ within a layer."""
    import nir
    from snntorch.import_nir import import_from_nir

    for name, node in graph.nodes.items():
        if isinstance(node, nir.LIF) and np.unique(node.r * SNNTORCH_DT / node.tau).size > 1:
            raise UnsupportedLayerError(f"snnTorch's NIR importer cannot run LIF node '{name}': its neurons "
                                        "differ in tau / r (per-channel leak), and it scales them alike")  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        return import_from_nir(copy.deepcopy(graph))


@torch.no_grad()
def run_snntorch(module: torch.nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The snnTorch module's output [T, N, ...] on frames [T, N, *input_shape] and the spikes [T, N, ...] of
    each of its neuron layers (by node name), the state reset before every sample."""
    import snntorch

    neurons = {name: m for name, m in module.named_modules() if isinstance(m, snntorch.Leaky)}
    recorded: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: recorded.setdefault(name, []).append(out))
             for name, m in neurons.items()]  # fmt: skip
    outputs = []
    try:
        for sample in range(frames.shape[1]):
            for neuron in neurons.values():
                neuron.reset_mem()
            outputs.append(torch.stack([module(frames[t, sample])[0] for t in range(frames.shape[0])]))
    finally:
        for hook in hooks:
            hook.remove()
    steps = frames.shape[0]
    spikes = {name: torch.stack(values).unflatten(0, (-1, steps)).transpose(0, 1) for name, values in recorded.items()}
    return torch.stack(outputs, dim=1), spikes


@torch.no_grad()
def outputs_and_margins(graph: SpikingGraph, x: torch.Tensor, timesteps: int | None = None
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:  # fmt: skip
    """graph.node_outputs(x), and for every neuron node |membrane before the spike decision - threshold|
    [T, N, ...]: how far each spike decision was from going the other way."""
    lifs = [layer for layer in graph.layers.values() if isinstance(layer, LIF)]
    stored = [layer.store_h for layer in lifs]
    for layer in lifs:
        layer.store_h = True
    try:
        values = graph.node_outputs(x, timesteps)
        margins = {}
        for name in graph.order:
            layer = graph.layers[name]
            if isinstance(layer, LIF):
                h = layer.last_h
            elif isinstance(layer, Fire):
                drive = sum(values[s] for s in graph.sources[name])
                h = broadcast_param(layer.v_leak, drive[0]) + broadcast_param(layer.r, drive[0]) * drive
            else:
                continue
            margins[name] = (h - broadcast_param(layer.v_threshold, h[0])).abs()
    finally:
        for layer, keep in zip(lifs, stored, strict=True):
            layer.store_h, layer.last_h = keep, None
    return values, margins


@dataclass
class Agreement:
    """How two runs of one network compare, accumulated over batches: per neuron layer (by node name) the
    equal and total spike counts, the largest output difference, equal predictions (arg max of the output
    summed over steps), and, for every sample where some spike differs, the first neuron layer (in graph
    order) where it does and the largest |membrane - threshold| of ours at its differing spikes: a difference
    that float rounding alone caused starts at a spike decision that close to the threshold."""

    layers: dict[str, list[int]] = field(default_factory=dict)
    max_output_difference: float = 0.0
    equal_predictions: int = 0
    samples: int = 0
    samples_with_differences: int = 0
    first_layers: dict[str, int] = field(default_factory=dict)
    max_first_margin: float = 0.0

    def update(self, ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], our_output: torch.Tensor,
               their_output: torch.Tensor, order: list[str] | None = None,
               margins: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
        """Adds one batch: spikes [T, N, ...] by layer name (layers both sides have) and outputs [T, N, K];
        order (the layers in graph order) and our margins enable the first-difference analysis."""
        names = [n for n in (order or sorted(theirs)) if n in theirs and n in ours]
        differ = {}
        for name in names:
            counts = self.layers.setdefault(name, [0, 0])
            differ[name] = ours[name].detach().cpu().float() != theirs[name].detach().cpu().float()
            counts[0] += theirs[name].numel() - int(differ[name].sum())
            counts[1] += theirs[name].numel()
        a, b = our_output.detach().cpu().float(), their_output.detach().cpu().float()
        if a.numel():
            self.max_output_difference = max(self.max_output_difference, float((a - b).abs().max()))
        self.equal_predictions += int((a.sum(0).argmax(-1) == b.sum(0).argmax(-1)).sum())
        self.samples += a.shape[1]
        for sample in range(a.shape[1]):
            first = next((n for n in names if differ[n][:, sample].any()), None)
            if first is None:
                continue
            self.samples_with_differences += 1
            self.first_layers[first] = self.first_layers.get(first, 0) + 1
            if margins is not None and first in margins:
                gap = float(margins[first][:, sample].cpu()[differ[first][:, sample]].max())
            else:
                gap = float("inf")
            self.max_first_margin = max(self.max_first_margin, gap)

    @property
    def spikes(self) -> dict[str, float]:
        """Fraction of equal spikes per layer."""
        return {name: equal / max(1, total) for name, (equal, total) in self.layers.items()}

    @property
    def overall(self) -> float:
        """Fraction of equal spikes over all layers."""
        return sum(e for e, _ in self.layers.values()) / max(1, sum(t for _, t in self.layers.values()))

    @property
    def predictions(self) -> float:
        return self.equal_predictions / max(1, self.samples)

    def to_dict(self) -> dict:
        return {"spike_agreement": self.overall, "spikes_compared": sum(t for _, t in self.layers.values()),
                "differing_spikes": {name: total - equal for name, (equal, total) in self.layers.items()},
                "samples_with_differences": self.samples_with_differences, "first_differing_layers": self.first_layers,
                "max_margin_at_first_difference": self.max_first_margin if self.samples_with_differences else None,
                "max_output_difference": self.max_output_difference, "prediction_agreement": self.predictions,
                "samples": self.samples}  # fmt: skip


def static_frames(x: torch.Tensor, graph: SpikingGraph, timesteps: int | None) -> torch.Tensor:
    """x as frames [T, N, ...]: as is if it is a sequence, else the static input repeated over the steps."""
    if x.dim() == len(graph.input_shape) + 2:
        return x
    steps = timesteps if timesteps is not None else graph.timesteps
    return x.unsqueeze(0).expand(steps, *x.shape)


@torch.no_grad()
def compare_with_snntorch(graph: SpikingGraph, nir_graph: Any, x: torch.Tensor, timesteps: int | None = None
                          ) -> Agreement:  # fmt: skip
    """Runs `graph` (ndsnn) and `nir_graph` imported by snnTorch on the same input x ([T, N, ...] frames, or a
    static [N, ...] presented for timesteps steps) and compares every neuron layer and the output."""
    values, margins = outputs_and_margins(graph, x, timesteps)
    output, spikes = run_snntorch(import_into_snntorch(nir_graph), static_frames(x, graph, timesteps).float().cpu())
    result = Agreement()
    result.update(values, spikes, values[OUTPUT], output, graph.order, margins)
    return result
