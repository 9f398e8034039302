"""SET (Mocanu et al., 2018): every update, drop the smallest-magnitude fraction of each layer's kept weights
and grow as many at random pruned positions; the density stays fixed."""

from __future__ import annotations

from ..schedule import cosine_drop_fraction
from .base import SparseMethod


class SET(SparseMethod):
    name = "set"

    def __init__(self, *args, drop_fraction: float = 0.3, anneal: bool = False, **kwargs) -> None:
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction!r}")
        self.drop_fraction, self.anneal = drop_fraction, anneal
        super().__init__(*args, **kwargs)

    def current_drop_fraction(self) -> float:
        if self.anneal and self.total_steps:
            return cosine_drop_fraction(self.step_count, self.drop_fraction, self.stop_step())
        return self.drop_fraction

    def grow_score(self, layer):
        return None  # random

    def update(self) -> dict:
        fraction = self.current_drop_fraction()
        dropped, grown = {}, {}
        for name, layer in self.layers:
            n = round(fraction * int(layer.weight_mask.sum()))
            dropped[name], grown[name] = self.drop_and_grow(layer, n, n, layer.weight.abs(), self.grow_score(layer))
        return {"drop_fraction": fraction, "dropped": dropped, "grown": grown}
