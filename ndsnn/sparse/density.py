"""Per-layer densities from a global target: uniform, or Erdos-Renyi-Kernel (ERK).

ERK (Evci et al., "Rigging the Lottery", 2020, after Mocanu et al.'s Erdos-Renyi) gives a layer of shape
[n_out, n_in, k_h, k_w] a density proportional to (n_out + n_in + k_h + k_w) / (n_out * n_in * k_h * k_w)
(for a linear layer, (n_out + n_in) / (n_out * n_in)), scaled so that the total number of kept weights is
density * total. A layer whose scaled density would exceed 1 is made dense and the scale is solved again
over the others, until none exceeds 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DISTRIBUTIONS = ("uniform", "erk")


def check_density(density: float, name: str = "density") -> None:
    if not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {density!r}")


def uniform_densities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Every layer at the global density."""
    check_density(density)
    return [float(density)] * len(shapes)


def erk_raw_score(shape: Sequence[int], power: float = 1.0) -> float:
    """ERK's un-normalised density of a layer: sum of its dimensions over their product (to `power`)."""
    return (sum(shape) / math.prod(shape)) ** power


def erk_densities(shapes: Sequence[Sequence[int]], density: float, power: float = 1.0) -> list[float]:
    """ERK densities whose kept-weight total is density * total (layers capped at 1)."""
    check_density(density)
    sizes = [math.prod(s) for s in shapes]
    if any(size == 0 for size in sizes):
        raise ValueError(f"every sparse layer needs weights; got shapes {list(map(tuple, shapes))}")
    return proportional_densities(sizes, [erk_raw_score(s, power) for s in shapes], density)


def proportional_densities(sizes: Sequence[int], scores: Sequence[float], density: float) -> list[float]:
    """Densities proportional to `scores` whose kept-weight total is density * sum(sizes): a layer whose
    density would exceed 1 is made dense and the scale is solved again over the others, until none does."""
    check_density(density)
    budget = density * sum(sizes)
    dense: set[int] = set()
    scale = 0.0
    while True:
        free = [i for i in range(len(sizes)) if i not in dense]
        remaining = budget - sum(sizes[i] for i in dense)
        weighted = sum(scores[i] * sizes[i] for i in free)
        if not free or weighted == 0:
            break
        scale = remaining / weighted
        over = [i for i in free if scale * scores[i] > 1.0]
        if not over:
            break
        dense.update(over)
    return [1.0 if i in dense else min(1.0, scale * scores[i]) for i in range(len(sizes))]


def layer_densities(shapes: Sequence[Sequence[int]], density: float, distribution: str = "erk") -> list[float]:
    """Densities by name: "uniform" or "erk"."""
    if distribution == "uniform":
        return uniform_densities(shapes, density)
    if distribution == "erk":
        return erk_densities(shapes, density)
    raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")


def kept_counts(shapes: Sequence[Sequence[int]], densities: Sequence[float]) -> list[int]:
    """Whole numbers of kept weights per layer (rounded; at least one per layer)."""
    return [max(1, min(math.prod(s), round(d * math.prod(s)))) for s, d in zip(shapes, densities, strict=True)]
