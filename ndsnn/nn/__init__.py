"""Modules: spiking neurons, the drop-in sparse layers, converting models to them, keeping pruned weights zero."""

from .convert import masked_modules, sparsify
from .lif import LIF
from .masking import keep_pruned_zero, zero_pruned_
from .sparse_layers import MaskedWeight, SparseLinear, SparseSpikingConv2d

__all__ = [
    "LIF",
    "MaskedWeight",
    "SparseLinear",
    "SparseSpikingConv2d",
    "keep_pruned_zero",
    "masked_modules",
    "sparsify",
    "zero_pruned_",
]
