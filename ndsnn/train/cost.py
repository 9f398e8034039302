"""Training cost of the sparse layers (convolutions and fully connected layers), counted per step from each
layer's actual density and measured input spike rate.

For one call of a layer with dense multiply-accumulate count M (output elements x inputs per output: for a
conv, N*T*C_out*H_out*W_out * C_in/groups * kh * kw), kept fraction d of its weights, fraction r of nonzero
inputs (spikes; r ~ 1 for the real-valued image), and d_w = 1 on steps whose backward computes the dense
weight gradient (before a grow), else d:

    FLOPs  (2 per multiply-accumulate, sparsity of weights only, what a masked dense kernel would do)
      forward   2 M d
      backward  2 M d (input gradient)  +  2 M d_w (weight gradient)
    SOPs   (synaptic operations: one accumulate per kept synapse and nonzero input, event-driven)
      forward   M d r
      backward  M d (input gradient: the output gradients are not sparse)  +  M d_w r (weight gradient)

and the same network trained dense costs 2M forward + 4M backward FLOPs. Batch norm, neurons and pooling are
not counted (they are linear in the activations, not in the weights). A run's cost is the sum over its steps,
LTH's over all of its rounds."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..nn.sparse_layers import MaskedWeight
from ..ops.nonzero import nonzero_count

COST_KEYS = ("flops_forward", "flops_backward", "sops_forward", "sops_backward", "dense_flops")


def multiply_accumulates(layer: nn.Module, output: torch.Tensor) -> int:
    """Dense multiply-accumulates of one call that produced `output`."""
    if isinstance(layer, nn.Conv2d):
        return output.numel() * (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, nn.Linear):
        return output.numel() * layer.in_features
    raise TypeError(f"no cost formula for {type(layer).__name__}")


class TrainingCost:
    """Counts the cost of the training forwards (module.training) of the given layers, step by step."""

    def __init__(self, layers: Iterable[tuple[str, MaskedWeight]]) -> None:
        self.totals = dict.fromkeys(COST_KEYS, 0.0)
        self.pending: dict[str, float | torch.Tensor] = dict.fromkeys(COST_KEYS, 0.0)
        self.input_rate_sums: dict[str, torch.Tensor] = {}  # since the last take_input_rates()
        self.input_rate_counts: dict[str, int] = {}
        self.layers = list(layers)
        self.densities: dict[str, float] = {}
        self.refresh_densities()
        self.handles = [layer.register_forward_hook(self._hook(name)) for name, layer in self.layers]

    def refresh_densities(self) -> None:
        """Reads the masks' densities; the trainer calls it whenever the masks may have changed (a method's
        update, an LTH round, a resume)."""
        self.densities = {name: layer.density for name, layer in self.layers}

    def _hook(self, name: str):
        def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not layer.training or not torch.is_grad_enabled():
                return
            x = inputs[0]
            macs = float(multiply_accumulates(layer, output))
            density = self.densities[name]
            rate = nonzero_count(x.detach()).double() / max(1, x.numel())  # a tensor: no device sync here
            weight_density = 1.0 if layer.dense_weight_grad else density
            self.pending["flops_forward"] += 2 * macs * density
            self.pending["flops_backward"] += 2 * macs * density + 2 * macs * weight_density
            self.pending["sops_forward"] = self.pending["sops_forward"] + macs * density * rate
            self.pending["sops_backward"] = (
                self.pending["sops_backward"] + macs * density + macs * weight_density * rate
            )
            self.pending["dense_flops"] += 6 * macs
            self.input_rate_sums[name] = self.input_rate_sums.get(name, 0) + rate
            self.input_rate_counts[name] = self.input_rate_counts.get(name, 0) + 1

        return record

    def end_step(self) -> dict[str, float]:
        """Adds the step's cost to the totals; returns the step's cost."""
        step = {key: float(value) for key, value in self.pending.items()}
        for key, value in step.items():
            self.totals[key] += value
        self.pending = dict.fromkeys(COST_KEYS, 0.0)
        return step

    def take_input_rates(self) -> dict[str, float]:
        """Mean input nonzero fraction of each layer since the last call."""
        rates = {name: float(total) / self.input_rate_counts[name] for name, total in self.input_rate_sums.items()}
        self.input_rate_sums, self.input_rate_counts = {}, {}
        return rates

    def input_rates_state_dict(self) -> dict[str, dict]:
        """The input-rate sums and counts since the last take_input_rates(), for an exact resume."""
        sums = {name: torch.as_tensor(total).detach().cpu() for name, total in self.input_rate_sums.items()}
        return {"sums": sums, "counts": dict(self.input_rate_counts)}

    def load_input_rates_state_dict(self, state: dict[str, dict]) -> None:
        self.input_rate_sums = dict(state["sums"])
        self.input_rate_counts = {name: int(n) for name, n in state["counts"].items()}

    def summary(self) -> dict[str, float]:
        """Totals, with FLOPs relative to training the same network dense."""
        totals = dict(self.totals)
        totals["flops"] = totals["flops_forward"] + totals["flops_backward"]
        totals["sops"] = totals["sops_forward"] + totals["sops_backward"]
        totals["flops_relative_to_dense"] = totals["flops"] / totals["dense_flops"] if totals["dense_flops"] else 0.0
        return totals

    def state_dict(self) -> dict[str, float]:
        return dict(self.totals)

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.totals = {key: float(state[key]) for key in COST_KEYS}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
