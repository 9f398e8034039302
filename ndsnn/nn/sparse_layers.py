"""``SparseSpikingConv2d`` and ``SparseLinear``: drop-in nn.Conv2d / nn.Linear with a pruning mask whose
pruned weights cost nothing where the sparse kernels are faster (ndsnn.ops.sparse_conv2d's dispatcher).

Both take [N, ...] or multi-step [T, N, ...] input (T folded into the batch), keep the mask as a bool buffer
``weight_mask`` (saved in the state_dict), and compute exactly F.conv2d / F.linear with weight * mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.sparse_conv2d import sparse_conv2d
from ..ops.sparse_linear import sparse_linear


class MaskedWeight:
    """The mask half of a sparse layer: the ``weight_mask`` buffer and what users and sparsity methods do with it.

    dense_weight_grad: when True, the next backward also fills the gradient of pruned weights (what a grow
    step ranks). spike_input: True / False tells the dispatcher what this layer's input is; None looks.
    implementation: "auto" (dispatcher), "sparse" or "dense".
    """

    weight: nn.Parameter
    weight_mask: torch.Tensor

    def _init_mask(self) -> None:
        self.register_buffer("weight_mask", torch.ones(self.weight.shape, dtype=torch.bool, device=self.weight.device))
        self.dense_weight_grad = False
        self.spike_input: bool | None = None
        self.implementation = "auto"

    @property
    def density(self) -> float:
        """Fraction of kept weights, counted from the mask at every read, however the mask was changed (one
        pass over it, and a device sync on a GPU: code that reads it every step keeps its own copy)."""
        mask = self.weight_mask
        return int(mask.count_nonzero()) / max(1, mask.numel())

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights."""
        return 1.0 - self.density

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask (bool, weight's shape) in place and zero the weights it prunes."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != self.weight.shape:
            got = f"{mask.dtype} of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask)
            raise ValueError(f"mask must be a bool tensor of weight's shape {tuple(self.weight.shape)}, got {got}")
        self.weight_mask.copy_(mask)
        self.apply_mask_()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zero the pruned weights (after an optimizer step or a load that may have filled them)."""
        self.weight.mul_(self.weight_mask)

    def _autocast_args(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x, weight and bias in autocast's dtype when autocast is on (as F.conv2d / F.linear would run)."""
        weight, bias = self.weight, self.bias
        device_type = x.device.type
        if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        return x, weight, bias

    def _op_options(self) -> dict:
        return dict(
            dense_weight_grad=self.dense_weight_grad, implementation=self.implementation, spike_input=self.spike_input
        )


class SparseSpikingConv2d(MaskedWeight, nn.Conv2d):
    """nn.Conv2d with a pruning mask; input [N, C, H, W] or [T, N, C, H, W]."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (4, 5):
            raise ValueError(
                f"{type(self).__name__} expects input [N, C, H, W] or [T, N, C, H, W], got shape {tuple(x.shape)}"
            )
        if x.dim() == 5:
            return self.forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        x, padding = self._pad(x)
        x, weight, bias = self._autocast_args(x)
        return sparse_conv2d(
            x, weight, self.weight_mask, bias, self.stride, padding, self.dilation, self.groups,
            **self._op_options(),
        )  # fmt: skip

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The input and symmetric padding for the op: padding modes and uneven 'same' padding done by F.pad."""
        if isinstance(self.padding, str):
            if self.padding == "valid":
                return x, (0, 0)
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            before = [t // 2 for t in totals]
            if all(t % 2 == 0 for t in totals) and self.padding_mode == "zeros":
                return x, (before[0], before[1])
            pad = [before[1], totals[1] - before[1], before[0], totals[0] - before[0]]
        elif self.padding_mode == "zeros":
            return x, tuple(self.padding)
        else:
            pad = [self.padding[1], self.padding[1], self.padding[0], self.padding[0]]
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, pad, mode=mode), (0, 0)


class SparseLinear(MaskedWeight, nn.Linear):
    """nn.Linear with a pruning mask; input [..., in_features] (so [N, F] and [T, N, F] alike)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias = self._autocast_args(x)
        return sparse_linear(x, weight, self.weight_mask, bias, **self._op_options())
