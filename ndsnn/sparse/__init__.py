"""The sparsity engine (in progress): per-layer densities, schedules and exact-count masks so far."""

from .density import DISTRIBUTIONS, erk_densities, kept_counts, layer_densities, uniform_densities
from .masks import magnitude_mask, random_mask, top_k_mask
from .schedule import cosine_drop_fraction, cubic_density

__all__ = [
    "DISTRIBUTIONS",
    "cosine_drop_fraction",
    "cubic_density",
    "erk_densities",
    "kept_counts",
    "layer_densities",
    "magnitude_mask",
    "random_mask",
    "top_k_mask",
    "uniform_densities",
]
