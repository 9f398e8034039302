"""Modules: spiking neurons, the drop-in sparse layers, converting models to them, keeping pruned weights zero."""

from .batch_norm_lif import batch_norm_lif_fusion, batch_norm_then_lif
from .convert import masked_modules, sparsify
from .lif import LIF
from .lif_pool import lif_pool_fusion
from .masking import keep_pruned_zero, zero_pruned_
from .pooling import MaxPool2d
from .sparse_layers import MaskedWeight, SparseLinear, SparseSpikingConv2d

__all__ = [
    "LIF",
    "MaskedWeight",
    "MaxPool2d",
    "SparseLinear",
    "SparseSpikingConv2d",
    "batch_norm_lif_fusion",
    "batch_norm_then_lif",
    "keep_pruned_zero",
    "lif_pool_fusion",
    "masked_modules",
    "sparsify",
    "zero_pruned_",
]
