"""RigL (Evci et al., 2020): drop by magnitude, grow where the dense gradient is largest, equal counts;
drop fraction annealed by cosine from alpha (0.3) to 0 at stop_fraction (0.75) of training."""

from __future__ import annotations

from .set_method import SET


class RigL(SET):
    name = "rigl"
    default_grow = "gradient"

    def __init__(self, *args, drop_fraction: float = 0.3, stop_fraction: float = 0.75, **kwargs) -> None:
        if not 0.0 < stop_fraction <= 1.0:
            raise ValueError(f"stop_fraction must be in (0, 1], got {stop_fraction!r}")
        self.stop_fraction = stop_fraction
        super().__init__(*args, drop_fraction=drop_fraction, anneal=True, **kwargs)
        if self.total_steps is None:
            raise ValueError("rigl needs total_steps (its drop fraction is annealed over training)")

    def stop_step(self) -> int:
        return int(self.stop_fraction * self.total_steps)
