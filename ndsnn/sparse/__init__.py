"""The sparsity engine: per-layer densities, schedules, exact-count masks, and the methods
(``create(name, model, optimizer, **config)``; names in ``METHODS``)."""

from .density import DISTRIBUTIONS, erk_densities, kept_counts, layer_densities, uniform_densities
from .kept_optimizer import KeptOnlyOptimizer
from .masks import magnitude_mask, random_mask, top_k_mask
from .methods import METHODS, SparseMethod
from .schedule import cosine_drop_fraction, cubic_density
from .topk import grow_topk, grow_topk_reference


def create(name: str, model, optimizer, **config) -> SparseMethod:
    """A sparsity method by name; see each class for its options."""
    if name not in METHODS:
        raise ValueError(f"unknown sparsity method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name](model, optimizer, **config)


__all__ = [
    "DISTRIBUTIONS",
    "KeptOnlyOptimizer",
    "METHODS",
    "SparseMethod",
    "create",
    "cosine_drop_fraction",
    "cubic_density",
    "erk_densities",
    "grow_topk",
    "grow_topk_reference",
    "kept_counts",
    "layer_densities",
    "magnitude_mask",
    "random_mask",
    "top_k_mask",
    "uniform_densities",
]
