"""Ops: each with a compiled kernel (torch.ops.ndsnn.*), a plain-PyTorch reference, autograd and fake kernels."""

from .batch_norm_lif import batch_norm_lif, batch_norm_lif_reference
from .lif import lif
from .lif_reference import lif_reference
from .lif_repeated import lif_repeated
from .lif_repeated_pool import lif_repeated_max_pool
from .max_pool import max_pool_window
from .sparse_conv2d import sparse_conv2d, sparse_conv2d_reference
from .sparse_linear import sparse_linear, sparse_linear_reference
from .surrogate import DEFAULT_ALPHA, SURROGATES, spike, surrogate_grad

__all__ = [
    "DEFAULT_ALPHA",
    "SURROGATES",
    "batch_norm_lif",
    "batch_norm_lif_reference",
    "lif",
    "lif_reference",
    "lif_repeated",
    "lif_repeated_max_pool",
    "max_pool_window",
    "sparse_conv2d",
    "sparse_conv2d_reference",
    "sparse_linear",
    "sparse_linear_reference",
    "spike",
    "surrogate_grad",
]
