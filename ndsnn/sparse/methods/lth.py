"""LTH: iterative magnitude pruning with rewinding (Frankle et al.; for SNNs, Kim et al., ECCV 2022).

Training runs in rounds. Each round trains with the mask fixed; at its end ``next_round()`` prunes
prune_rate (25%) of the remaining weights by global magnitude, rewinds the kept weights to their values at
rewind_step of the first round (late rewinding), and zeroes the optimizer state. Rounds continue until
the target density is reached: round r (from 0) trains at density (1 - prune_rate)^r, the last one at
the target. The trainer drives the rounds; `steps_trained` counts every step of every round, the cost
the comparison with one-shot methods needs.
"""

from __future__ import annotations

import math

import torch

from ...nn.masking import weight_state
from ..masks import top_k_mask
from .base import SparseMethod


class LTH(SparseMethod):
    name = "lth"

    def __init__(self, *args, prune_rate: float = 0.25, rewind_step: int = 0, **kwargs) -> None:
        if not 0.0 < prune_rate < 1.0:
            raise ValueError(f"prune_rate must be in (0, 1), got {prune_rate!r}")
        if not isinstance(rewind_step, int) or rewind_step < 0:
            raise ValueError(f"rewind_step must be a non-negative integer, got {rewind_step!r}")
        self.prune_rate, self.rewind_step = prune_rate, rewind_step
        self.round_step = 0
        self.steps_trained = 0
        self.rewind_weights: list[torch.Tensor] | None = None
        super().__init__(*args, **kwargs)
        self.round = 0
        if rewind_step == 0:
            self._save_rewind_point()

    @property
    def rounds(self) -> int:
        """Number of training rounds, the dense one included."""
        if self.density >= 1.0:
            return 1
        return math.ceil(math.log(self.density) / math.log(1.0 - self.prune_rate)) + 1

    def round_density(self, round_index: int) -> float:
        return max(self.density, (1.0 - self.prune_rate) ** round_index)

    def initial_density(self) -> float:
        return 1.0

    def is_update_step(self, step: int) -> bool:
        return False  # masks change only between rounds

    def _save_rewind_point(self) -> None:
        self.rewind_weights = [layer.weight.detach().clone() for _, layer in self.layers]

    def step(self) -> None:
        super().step()
        self.round_step += 1
        self.steps_trained += 1
        if self.round == 0 and self.round_step == self.rewind_step:
            self._save_rewind_point()

    @torch.no_grad()
    def next_round(self) -> bool:
        """Prune to the next round's density by global magnitude and rewind; False once all rounds are done."""
        if self.round + 1 >= self.rounds:
            return False
        if self.rewind_weights is None:
            raise RuntimeError(f"rewind_step {self.rewind_step} was not reached in the first round")
        self.round += 1
        self.round_step = 0
        total = sum(layer.weight.numel() for _, layer in self.layers)
        target = round(self.round_density(self.round) * total)
        scores = torch.cat([
            torch.where(layer.weight_mask, layer.weight.abs(), torch.full_like(layer.weight, -1.0)).reshape(-1)
            for _, layer in self.layers
        ])  # fmt: skip
        keep = top_k_mask(scores, target)
        self.decision_ops += scores.numel()
        offset = 0
        for (_, layer), rewind in zip(self.layers, self.rewind_weights, strict=True):
            mask = keep[offset : offset + layer.weight.numel()].view(layer.weight.shape)
            offset += layer.weight.numel()
            layer.weight.copy_(rewind)
            layer.set_mask(mask)
            for value in weight_state(self.optimizer, layer.weight):
                value.zero_()
        self.log.append({"round": self.round, "step": self.steps_trained,
                         "density": {name: layer.density for name, layer in self.layers}})  # fmt: skip
        return True

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(round=self.round, round_step=self.round_step, steps_trained=self.steps_trained,
                     rewind_weights=self.rewind_weights)  # fmt: skip
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.round, self.round_step = int(state["round"]), int(state["round_step"])
        self.steps_trained = int(state["steps_trained"])
        self.rewind_weights = state["rewind_weights"]
