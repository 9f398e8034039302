"""Criticality-guided pruning-regeneration (Chen, Liu, Liu, You, "Brain-inspired efficient pruning:
exploiting criticality in spiking neural networks").

Neurons whose membrane potential sits near the firing threshold are "critical": a small change of their input
changes their spikes. The score of an output channel (or of a neuron of a fully connected layer) is the
surrogate gradient at the membrane potential before reset, h - v_threshold, averaged over the T steps, the
maximum over space, the mean over the batch; it is measured on the mini-batch of the step before each update,
from the h the fused LIF op returns (no second forward pass).

Training starts dense (init_density 1.0) and prunes gradually to the target on a cubic schedule (GraNet, as the
authors' code) until stop_fraction (2/3: pruning over 200 of 300 epochs in their setup) of training, then
fine-tunes with the masks frozen. At each update every layer's budget k comes from one global magnitude ranking
of the kept weights (global_magnitude=True, as the authors' code; False: the configured per-layer distribution);
the layer keeps (1 - r) k weights by magnitude and regenerates r k (regeneration_ratio r = 0.5) among its
pruned weights in the output channels of highest criticality, at zero (a weight pruned and regenerated in the
same update keeps its value, as in every drop-and-grow here). Layers whose outputs reach no LIF
neuron (the classifier) have no criticality and keep their k weights by magnitude.

structured=True prunes whole output channels instead (network slimming's unit, as the authors' structured
variant): a channel's importance is the magnitude of its batch-norm scale (trained with an L1 penalty,
slimming = 1e-4, added to the loss through auxiliary_loss); each layer keeps round(density * channels)
channels at the scheduled density (the same for every layer), (1 - r) of them by importance and r
regenerated among pruned channels by criticality, restarting at zero weights and a fresh batch norm (a channel
pruned and regenerated in the same update keeps its weights and batch norm). Pruned
channels are silent (their batch-norm scale and shift are held at zero), so ndsnn.models.shrink can remove
them and give a physically smaller network with the same outputs. Layers whose outputs reach no LIF neuron
(the classifier) are not pruned in this mode.

Choices where the sources are silent or differ: the score uses the layer's own surrogate (its shape peaks at
the threshold like the authors' bell-shaped variants); regeneration is counted per layer, so every layer ends
each update at exactly its budget (the authors' code regrows a global count, ties included); ties between
positions of equally critical channels are broken at random (seeded).
"""

from __future__ import annotations

import torch
from torch import nn

from ...nn.lif import LIF
from ...nn.masking import weight_state
from ...ops.surrogate import DEFAULT_ALPHA, surrogate_grad
from ..channels import channel_mask, kept_channels, restart_channels, silence_channels
from ..masks import top_k_mask
from ..schedule import cubic_density
from .base import ScheduledMethod, mean_over_ranks


def channel_criticality(h: torch.Tensor, lif: LIF) -> torch.Tensor:
    """Criticality of each channel (dim 2 of h [T, N, C, ...]): the surrogate gradient at h - v_threshold,
    mean over T, max over the dims after C, mean over N."""
    threshold = lif.v_threshold
    if isinstance(threshold, torch.Tensor) and threshold.dim() == 1:  # per channel
        threshold = threshold.detach().view(-1, *([1] * (h.dim() - 3)))
    elif isinstance(threshold, torch.Tensor):
        threshold = threshold.detach()
    alpha = lif.alpha if lif.alpha is not None else DEFAULT_ALPHA[lif.surrogate]
    score = surrogate_grad(h.float() - threshold, lif.surrogate, alpha).mean(0)  # [N, C, ...]
    if score.dim() > 2:
        score = score.flatten(2).amax(2)
    return score.mean(0)


class Criticality(ScheduledMethod):
    name = "criticality"

    def __init__(self, *args, regeneration_ratio: float = 0.5, init_density: float = 1.0,
                 stop_fraction: float = 2.0 / 3.0, schedule_power: float = 3.0, global_magnitude: bool = True,
                 structured: bool = False, slimming: float = 1e-4, **kwargs) -> None:  # fmt: skip
        if not 0.0 <= regeneration_ratio <= 1.0:
            raise ValueError(f"regeneration_ratio must be in [0, 1], got {regeneration_ratio!r}")
        if schedule_power <= 0:
            raise ValueError(f"schedule_power must be positive, got {schedule_power!r}")
        if slimming < 0:
            raise ValueError(f"slimming must be >= 0, got {slimming!r}")
        self.structured, self.slimming = structured, slimming
        self.norms: dict[str, nn.modules.batchnorm._BatchNorm] = {}  # layer name -> its batch norm
        self.norm_names: dict[str, str] = {}
        self.regeneration_ratio, self.schedule_power, self.global_magnitude = (
            regeneration_ratio, schedule_power, global_magnitude)  # fmt: skip
        self.recording = False
        self.call_order: list[tuple[str, nn.Module]] = []
        super().__init__(*args, init_density=init_density, stop_fraction=stop_fraction, **kwargs)
        self.neurons = [(name, m) for name, m in self.model.named_modules() if isinstance(m, LIF)]
        if not self.neurons:
            raise ValueError("criticality needs LIF neurons (ndsnn.nn.LIF) in the model")
        watched = [*self.layers, *self.neurons]
        if structured:
            watched += [(n, m) for n, m in self.model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.hooks = [module.register_forward_hook(self._record(name))
                      for name, module in watched if isinstance(module, nn.Module)]  # fmt: skip
        self._set_gradient_flags()

    def _record(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if self.recording and module.training:
                self.call_order.append((name, module))

        return hook

    def _follower(self, index: int, kind: type, channels: int, ready) -> nn.Module | None:
        """The first module of `kind` with `channels` channels that ran after call `index` (and is ready)."""
        for _, later in self.call_order[index + 1 :]:
            if isinstance(later, kind) and ready(later) == channels:
                return later
        return None

    def scheduled_density(self, step: int) -> float:
        return cubic_density(step, self.init_density, self.density, 0, self.stop_step(), self.schedule_power)

    def _set_gradient_flags(self) -> None:
        """Besides the base's flags: the forward before an update keeps each LIF layer's h and the call order."""
        super()._set_gradient_flags()
        if not hasattr(self, "neurons"):
            return
        self.recording = self.is_update_step(self.step_count + 1)
        self.call_order = []
        for _, neuron in self.neurons:
            neuron.store_h = self.recording
            if not self.recording:
                neuron.last_h = None

    def layer_criticality(self) -> dict[str, torch.Tensor]:
        """Criticality of each sparse layer's output channels: those of the first LIF layer that runs after it
        on the recorded forward with as many channels (its own neurons, or the block's after a residual sum)."""
        scores: dict[str, torch.Tensor] = {}
        layer_names = {name for name, _ in self.layers}
        for index, (name, module) in enumerate(self.call_order):
            if name not in layer_names or name in scores:
                continue
            channels = module.weight.shape[0]
            neuron = self._follower(index, LIF, channels, lambda m: m.last_h.shape[2] if m.last_h is not None else -1)
            if neuron is not None:
                scores[name] = mean_over_ranks(channel_criticality(neuron.last_h, neuron))
                self.decision_ops += neuron.last_h.numel()
            if self.structured and name not in self.norms:
                norm = self._follower(index, nn.modules.batchnorm._BatchNorm, channels, lambda m: m.num_features)
                if norm is not None:
                    self.norms[name] = norm
                    self.norm_names[name] = next(n for n, m in self.model.named_modules() if m is norm)
        return scores

    def layer_budgets(self, density: float) -> list[int]:
        """Kept weights per layer at `density`: from one global magnitude ranking, or the distribution."""
        if not self.global_magnitude:
            return self.kept_targets(density)
        total = sum(layer.weight.numel() for _, layer in self.layers)
        magnitudes = torch.cat([
            torch.where(layer.weight_mask, layer.weight.detach().abs(), -1.0).reshape(-1) for _, layer in self.layers
        ])  # fmt: skip
        keep = top_k_mask(magnitudes, round(density * total))
        counts, offset = [], 0
        for _, layer in self.layers:
            counts.append(int(keep[offset : offset + layer.weight.numel()].sum()))
            offset += layer.weight.numel()
        return counts

    def update(self) -> dict:
        density = self.scheduled_density(self.step_count)
        criticality = self.layer_criticality()
        if self.structured:
            return self.update_channels(density, criticality)
        plans, regenerated = [], {}
        for (name, layer), budget in zip(self.layers, self.layer_budgets(density), strict=True):
            kept = int(layer.weight_mask.sum())
            budget = min(budget, kept)  # the count never increases
            regrow = round(self.regeneration_ratio * budget) if name in criticality else 0
            grow_score = None
            if regrow:
                per_channel = criticality[name].to(layer.weight.device)
                shape = (-1, *([1] * (layer.weight.dim() - 1)))
                grow_score = per_channel.view(shape).expand_as(layer.weight).float()
                jitter = torch.rand(layer.weight.shape, generator=self.generator).to(layer.weight.device)
                grow_score = grow_score + jitter * 1e-6 * (grow_score.abs().max() + 1e-12)
            plans.append((layer, kept - budget + regrow, regrow, layer.weight.detach().abs(), grow_score))
            regenerated[name] = regrow
        counts = self.drop_and_grow(plans)
        for _, neuron in self.neurons:
            neuron.last_h = None
        return {
            "scheduled_density": density,
            **self.counts_record(counts, ("dropped", "regenerated", "regrown")),
            "criticality_mean": {name: float(score.mean()) for name, score in criticality.items()},
        }

    # -- structured: whole channels ------------------------------------------------------------------------
    @torch.no_grad()
    def update_channels(self, density: float, criticality: dict[str, torch.Tensor]) -> dict:
        kept_log, regenerated_log = {}, {}
        for name, layer in self.layers:
            if name not in criticality:
                continue
            alive = kept_channels(layer.weight_mask)
            budget = min(int(alive.sum()), max(1, round(density * alive.numel())))
            regrow = round(self.regeneration_ratio * budget)
            norm = self.norms.get(name)
            importance = norm.weight.detach().abs() if norm is not None and norm.weight is not None else (
                layer.weight.detach().abs().flatten(1).sum(1))  # fmt: skip
            keep = top_k_mask(torch.where(alive, importance.float(), -1.0), budget - regrow)
            jitter = torch.rand(alive.shape, generator=self.generator).to(alive.device) * 1e-6
            score = criticality[name].to(alive.device) * (1 + jitter)
            regenerated = top_k_mask(torch.where(keep, -float("inf"), score), regrow)
            rows = keep | regenerated
            fresh = regenerated & ~alive  # channels pruned before restart at zero; those alive keep their weights
            layer.weight[fresh] = 0.0
            for value in weight_state(self.optimizer, layer.weight):
                value[fresh] = 0.0
            layer.set_mask(channel_mask(rows, layer.weight))
            if norm is not None:
                restart_channels(norm, fresh, self.optimizer)
            self.decision_ops += 2 * alive.numel()
            kept_log[name], regenerated_log[name] = int(rows.sum()), int(regenerated.sum())
        self.silence_pruned_channels()
        return {"scheduled_density": density, "channels": kept_log, "regenerated_channels": regenerated_log,
                "criticality_mean": {name: float(score.mean()) for name, score in criticality.items()}}  # fmt: skip

    def silence_pruned_channels(self) -> None:
        layers = dict(self.layers)
        for name, norm in self.norms.items():
            silence_channels(norm, ~kept_channels(layers[name].weight_mask), self.optimizer)

    def step(self) -> None:
        super().step()
        if self.structured:
            self.silence_pruned_channels()

    def auxiliary_loss(self, images: torch.Tensor) -> torch.Tensor | None:
        """Network slimming's L1 penalty on the batch-norm scales of the pruned layers (structured only)."""
        if not self.structured or self.slimming <= 0 or not self.norms:
            return None
        return self.slimming * sum(norm.weight.abs().sum() for norm in self.norms.values() if norm.weight is not None)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "norm_names": dict(self.norm_names)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        modules = dict(self.model.named_modules())
        self.norm_names = dict(state.get("norm_names", {}))
        self.norms = {layer: modules[norm] for layer, norm in self.norm_names.items()}
