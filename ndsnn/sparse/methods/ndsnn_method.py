"""NDSNN (neurogenesis dynamic sparse training): the number of non-zero weights decreases from an initial
density to the final one on a cubic schedule (Zhu & Gupta), and each update drops more weights (by magnitude)
than it grows (by gradient, as RigL): the difference is the schedule's decrease, the grown count a
cosine-annealed fraction of the new budget.

Defaults, chosen from the closest published practice since the paper's constants are not public in a
readable form: initial density 0.5 (GraNet-style start), cubic decay over the first 75% of training
(RigL's stop fraction), update every 100 steps, drop fraction 0.3 annealed by cosine (RigL). All are
parameters: init_density, sparsity (final), schedule_power (3: cubic; 1: linear), update_interval,
drop_fraction, stop_fraction.
"""

from __future__ import annotations

from ..schedule import cosine_drop_fraction, cubic_density
from .base import ScheduledMethod


class NDSNN(ScheduledMethod):
    name = "ndsnn"

    def __init__(self, *args, init_density: float = 0.5, drop_fraction: float = 0.3, stop_fraction: float = 0.75,
                 schedule_power: float = 3.0, **kwargs) -> None:  # fmt: skip
        if not 0.0 <= drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction!r}")
        if schedule_power <= 0:
            raise ValueError(f"schedule_power must be positive, got {schedule_power!r}")
        self.drop_fraction, self.schedule_power = drop_fraction, schedule_power
        super().__init__(*args, init_density=init_density, stop_fraction=stop_fraction, **kwargs)

    def wants_dense_gradient(self) -> bool:
        return True

    def scheduled_density(self, step: int) -> float:
        return cubic_density(step, self.init_density, self.density, 0, self.stop_step(), self.schedule_power)

    def update(self) -> dict:
        density = self.scheduled_density(self.step_count)
        fraction = cosine_drop_fraction(self.step_count, self.drop_fraction, self.stop_step())
        plans = []
        for (_, layer), target in zip(self.layers, self.kept_targets(density), strict=True):
            kept = int(layer.weight_mask.sum())
            target = min(target, kept)  # the count never increases
            n_grow = round(fraction * target)
            if layer.weight.grad is None:
                raise RuntimeError("ndsnn grows by gradient: call method.step() after backward and optimizer.step()")
            plans.append((layer, kept - target + n_grow, n_grow, layer.weight.abs(), layer.weight.grad.abs()))
        counts = self.drop_and_grow(plans)
        return {
            "scheduled_density": density,
            "drop_fraction": fraction,
            **self.counts_record(counts),
        }
