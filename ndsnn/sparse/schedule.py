"""Schedules of dynamic sparse training: how density and the drop fraction change over the steps.

- Gradual density (Zhu & Gupta, "To prune, or not to prune", 2017), used by NDSNN for its decreasing number
  of non-zero weights: d_t = d_final + (d_init - d_final) * (1 - progress)^3, progress = (t - t_0) / (t_end - t_0)
  clamped to [0, 1].
- Cosine-annealed drop fraction (RigL): f_t = alpha / 2 * (1 + cos(pi * t / t_end)) for t < t_end, else 0.
"""

from __future__ import annotations

import math


def _progress(step: int, start: int, end: int) -> float:
    if end <= start:
        return 1.0 if step >= end else 0.0
    return min(1.0, max(0.0, (step - start) / (end - start)))


def cubic_density(step: int, initial: float, final: float, start: int, end: int, power: float = 3.0) -> float:
    """Density at `step`, from `initial` (before start) to `final` (from end on), polynomial decay."""
    return final + (initial - final) * (1.0 - _progress(step, start, end)) ** power


def cosine_drop_fraction(step: int, alpha: float, end: int) -> float:
    """Fraction of kept weights to drop (and regrow) at `step`: alpha annealed by cosine to 0 at `end`."""
    if step >= end or end <= 0:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * step / end))
