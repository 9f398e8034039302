"""ndsnn: sparse spiking neural networks whose sparsity is real speed."""

__version__ = "0.1.0"

from . import data, models, nn, ops, sparse, train  # noqa: E402
from ._extension import KernelStatus  # noqa: E402
from ._extension import load as kernel_status  # noqa: E402

__all__ = ["KernelStatus", "__version__", "data", "kernel_status", "models", "nn", "ops", "sparse", "train"]
