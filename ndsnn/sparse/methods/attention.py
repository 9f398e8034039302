"""Attention-guided compression (Kundu, Datta, Pedram, Beerel: "Spike-Thrift", WACV 2021, and "Towards
low-latency energy-efficient deep SNNs via attention-guided compression", 2021).

The published method compresses with the attention maps of an uncompressed meta-model, then trains the SNN
with sparse learning, direct inputs and learnable thresholds and leaks, for few time steps (T = 2 to 5). The
papers' method sections were not readable here; the rules below are this library's, chosen to follow the
abstracts and the cited building blocks, and every one is a parameter:

1. Meta-model: the network trains dense for meta_fraction (0.25) of the steps (meta_fraction=0 compresses
   after the first step, from the weights the model has, e.g. a loaded dense model).
2. Compression, at the end of that phase, from the attention maps (Zagoruyko & Komodakis: the channel mean of
   |a|^2, p=2) of every sparse layer's output a on the last training batch (averaged over T and the batch,
   and over ranks): a layer's importance is the fraction of positions its map attends to, exp(entropy) of the
   normalised map over its size, in (0, 1]. Irregular: layer densities proportional to ERK's times that
   importance, scaled to the target (layers capped at 1); weights pruned by magnitude to those counts.
   structured=True: the same per-layer keep ratio applied to whole output channels, the channels of least
   attention (mean over space of |a_c|^2) pruned.
3. Sparse learning: every update_interval steps until stop_fraction (0.75), each layer drops drop_fraction
   (0.3, cosine-annealed) of its kept weights by magnitude and regrows as many where the running mean of the
   dense gradient is largest (sparse momentum, Dettmers & Zettlemoyer 2019); the per-layer densities stay as
   set. Then the masks are frozen. Structured masks are not rewired (channels stay pruned).
4. learn_threshold_leak=True makes every LIF layer's threshold and leak learnable parameters (per layer),
   added to the optimizer as a parameter group without weight decay.
5. at_weight > 0 adds the attention-transfer loss of the meta-model (a frozen copy taken at compression):
   at_weight / 2 * sum over layers of the mean over samples of || q_s / ||q_s|| - q_m / ||q_m|| ||_2, q the
   flattened attention map; the trainer adds `auxiliary_loss(images)`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ...nn.lif import LIF
from ..density import erk_raw_score, proportional_densities
from ..masks import top_k_mask
from ..schedule import cosine_drop_fraction
from .base import SparseMethod, mean_over_ranks


def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """Per-sample attention map of a layer's output: the channel mean of |a|^2, averaged over the steps.
    Input [T, N, C, H, W], [N, C, H, W], [T, N, F] or [N, F] (a linear layer: one position); output
    [N, positions]. Differentiable (the transfer loss needs the student's gradient)."""
    a = activation.float().pow(2)
    if a.dim() == 5:
        return a.mean(2).mean(0).flatten(1)
    if a.dim() == 4:
        return a.mean(1).flatten(1)
    if a.dim() == 3:
        return a.mean(-1).mean(0).unsqueeze(1)
    return a.mean(-1).unsqueeze(1)


def channel_attention(activation: torch.Tensor) -> torch.Tensor:
    """Per-channel attention: mean over steps, samples and space of |a_c|^2 (channels on dim -3 of a conv
    output, the last dim of a linear one)."""
    a = activation.detach().float().pow(2)
    if a.dim() >= 4:
        return a.transpose(0, -3).flatten(1).mean(1)
    return a.flatten(0, -2).mean(0)


def attention_importance(maps: torch.Tensor) -> float:
    """Fraction of positions an averaged attention map attends to: exp(entropy of the normalised map) / size;
    1 for a uniform map, 1/size for a single position."""
    mean_map = maps.mean(0)
    total = float(mean_map.sum())
    if mean_map.numel() <= 1 or total <= 0:
        return 1.0
    p = mean_map / total
    entropy = float(-(p * torch.log(p.clamp_min(1e-30))).sum())
    return math.exp(entropy) / mean_map.numel()


class AttentionGuided(SparseMethod):
    name = "attention"

    def __init__(self, *args, meta_fraction: float = 0.25, drop_fraction: float = 0.3, stop_fraction: float = 0.75,
                 structured: bool = False, learn_threshold_leak: bool = True, at_weight: float = 0.0,
                 **kwargs) -> None:  # fmt: skip
        if not 0.0 <= meta_fraction < 1.0:
            raise ValueError(f"meta_fraction must be in [0, 1), got {meta_fraction!r}")
        if not meta_fraction < stop_fraction <= 1.0:
            raise ValueError(f"stop_fraction must be in (meta_fraction, 1], got {stop_fraction!r}")
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction!r}")
        if at_weight < 0:
            raise ValueError(f"at_weight must be >= 0, got {at_weight!r}")
        self.meta_fraction, self.drop_fraction, self.stop_fraction = meta_fraction, drop_fraction, stop_fraction
        self.structured, self.at_weight = structured, at_weight
        self.activations: dict[str, torch.Tensor] = {}
        self.meta_model: nn.Module | None = None
        super().__init__(*args, **kwargs)
        if self.total_steps is None:
            raise ValueError("attention needs total_steps (its phases are fractions of training)")
        self.hooks = [layer.register_forward_hook(self._keep_output(name))
                      for name, layer in self.layers if isinstance(layer, nn.Module)]  # fmt: skip
        self.learned: list[nn.Parameter] = []
        if learn_threshold_leak:
            self._learn_threshold_leak()
        self._set_gradient_flags()

    def _keep_output(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if module.training and (self.at_weight > 0 or self.step_count + 1 == self.compression_step()):
                self.activations[name] = output

        return hook

    def _learn_threshold_leak(self) -> None:
        device = self.layers[0][1].weight.device
        for module in self.model.modules():
            if isinstance(module, LIF):
                created = module.make_learnable(threshold=True, tau=True)
                module.to(device)
                self.learned.extend(created)
        if self.learned and self.optimizer is not None:
            self.optimizer.add_param_group({"params": self.learned, "weight_decay": 0.0})

    # -- phases --------------------------------------------------------------------------------------------
    def initial_density(self) -> float:
        return 1.0  # the meta-model is dense

    def compression_step(self) -> int:
        """The step after which the masks are set: the end of the meta-model phase (at least one step, whose
        batch gives the attention maps)."""
        return max(1, int(self.meta_fraction * self.total_steps))

    def stop_step(self) -> int:
        return int(self.stop_fraction * self.total_steps)

    def is_update_step(self, step: int) -> bool:
        if step == self.compression_step():
            return True
        return step > self.compression_step() and super().is_update_step(step)

    def tracks_gradient_momentum(self) -> bool:
        return not self.structured

    def update(self) -> dict:
        if self.step_count == self.compression_step():
            return self.compress()
        if self.structured:
            return {}
        start = self.compression_step()
        fraction = cosine_drop_fraction(self.step_count - start, self.drop_fraction, self.stop_step() - start)
        plans = []
        for name, layer in self.layers:
            n = round(fraction * int(layer.weight_mask.sum()))
            plans.append((layer, n, n, layer.weight.detach().abs(), self.score(name, layer, "momentum")))
        return {"drop_fraction": fraction, **self.counts_record(self.drop_and_grow(plans))}

    @torch.no_grad()
    def compress(self) -> dict:
        """Sets every layer's density from the attention maps of the last batch and prunes to it."""
        importance = {}
        for name, _ in self.layers:
            output = self.activations.get(name)
            if output is None:  # the layer did not run on the last batch: no evidence, ERK's share
                importance[name] = 1.0
                continue
            importance[name] = attention_importance(mean_over_ranks(attention_map(output.detach()).mean(0)[None]))
            self.decision_ops += output.numel()
        shapes = [tuple(layer.weight.shape) for _, layer in self.layers]
        sizes = [math.prod(s) for s in shapes]
        base = [erk_raw_score(s) if self.distribution == "erk" else 1.0 for s in shapes]
        scores = [b * importance[name] for b, (name, _) in zip(base, self.layers, strict=True)]
        densities = proportional_densities(sizes, scores, self.density)
        for (name, layer), density, size in zip(self.layers, densities, sizes, strict=True):
            kept = max(1, round(density * size))
            if self.structured:
                layer.set_mask(self._channel_mask(name, layer, density))
            else:
                layer.set_mask(top_k_mask(torch.where(layer.weight_mask, layer.weight.abs(), -1.0), kept))
        if self.at_weight > 0:
            self.meta_model = copy.deepcopy(self.model).eval()  # the meta-model's attention, frozen
            for parameter in self.meta_model.parameters():
                parameter.requires_grad_(False)
        self.activations = {}
        return {"phase": "compression", "importance": importance,
                "layer_density": {n: d for (n, _), d in zip(self.layers, densities, strict=True)}}  # fmt: skip

    def _channel_mask(self, name: str, layer, density: float) -> torch.Tensor:
        channels = layer.weight.shape[0]
        keep = max(1, round(density * channels))
        output = self.activations.get(name)
        if output is None:
            scores = layer.weight.detach().abs().flatten(1).sum(1)
        else:
            scores = mean_over_ranks(channel_attention(output))
        rows = top_k_mask(scores.to(layer.weight.device), keep)
        return rows.view(-1, *([1] * (layer.weight.dim() - 1))).expand_as(layer.weight).clone()

    # -- the attention-transfer loss ----------------------------------------------------------------------
    def auxiliary_loss(self, images: torch.Tensor) -> torch.Tensor | None:
        """at_weight / 2 * sum over layers of || normalised student map - normalised meta-model map ||_2,
        averaged over the batch; None before the meta-model exists or with at_weight 0."""
        if self.meta_model is None or self.at_weight <= 0:
            return None
        student = {name: self.activations.get(name) for name, _ in self.layers}
        outputs: dict[str, torch.Tensor] = {}
        modules = dict(self.meta_model.named_modules())
        handles = [modules[name].register_forward_hook(lambda m, i, o, n=name: outputs.__setitem__(n, o))
                   for name, _ in self.layers if name in modules]  # fmt: skip
        try:
            with torch.no_grad():
                self.meta_model(images)
        finally:
            for handle in handles:
                handle.remove()
        loss = images.new_zeros(())
        for name, activation in student.items():
            if activation is None or name not in outputs:
                continue
            q_student = attention_map(activation)
            q_meta = attention_map(outputs[name].detach())
            difference = nn.functional.normalize(q_student, dim=1) - nn.functional.normalize(q_meta, dim=1)
            loss = loss + difference.norm(dim=1).mean()
        return self.at_weight / 2 * loss

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["meta_model"] = self.meta_model.state_dict() if self.meta_model is not None else None
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state.get("meta_model") is not None:
            self.meta_model = copy.deepcopy(self.model).eval()
            self.meta_model.load_state_dict(state["meta_model"])
            for parameter in self.meta_model.parameters():
                parameter.requires_grad_(False)
