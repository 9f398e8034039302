"""SET (Mocanu et al., 2018): every update, drop the smallest-magnitude fraction of each layer's kept weights
and grow as many at random pruned positions; the density stays fixed.

drop_criterion / grow_criterion choose other rules (magnitude, gradient, momentum, random): SET is
magnitude / random, RigL magnitude / gradient, sparse momentum magnitude / momentum."""

from __future__ import annotations

import torch

from ..schedule import cosine_drop_fraction
from .base import SparseMethod


class SET(SparseMethod):
    name = "set"

    default_grow = "random"

    def __init__(self, *args, drop_fraction: float = 0.3, anneal: bool = False, drop_criterion: str = "magnitude",
                 grow_criterion: str | None = None, **kwargs) -> None:  # fmt: skip
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction!r}")
        grow_criterion = grow_criterion or self.default_grow
        for label, criterion in (("drop_criterion", drop_criterion), ("grow_criterion", grow_criterion)):
            if criterion not in self.CRITERIA:
                raise ValueError(f"{label} must be one of {', '.join(self.CRITERIA)}; got {criterion!r}")
        self.drop_fraction, self.anneal = drop_fraction, anneal
        self.drop_criterion, self.grow_criterion = drop_criterion, grow_criterion
        super().__init__(*args, **kwargs)

    def wants_dense_gradient(self) -> bool:
        return self.grow_criterion == "gradient"

    def tracks_gradient_momentum(self) -> bool:
        return "momentum" in (self.drop_criterion, self.grow_criterion)

    def current_drop_fraction(self) -> float:
        if self.anneal and self.total_steps:
            return cosine_drop_fraction(self.step_count, self.drop_fraction, self.stop_step())
        return self.drop_fraction

    def update(self) -> dict:
        fraction = self.current_drop_fraction()
        plans = []
        for name, layer in self.layers:
            n = round(fraction * int(layer.weight_mask.sum()))
            drop = self.score(name, layer, self.drop_criterion)
            if drop is None:
                drop = torch.rand(layer.weight.shape, generator=self.generator).to(layer.weight.device)
            plans.append((layer, n, n, drop, self.score(name, layer, self.grow_criterion)))
        counts = self.drop_and_grow(plans)
        return {
            "drop_fraction": fraction,
            **self.counts_record(counts),
        }
