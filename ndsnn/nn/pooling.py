"""MaxPool2d: nn.MaxPool2d that runs ndsnn's max-pool kernel where it applies (window = stride, no padding,
dilation 1, floor), the pooling between the stages of VGG and the convnet."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.max_pool import max_pool_window


class MaxPool2d(nn.MaxPool2d):
    """A drop-in nn.MaxPool2d (same arguments, values and gradients) that takes ndsnn's kernel for its common
    configuration and nn.MaxPool2d's own forward for every other."""

    def _window(self) -> int | None:
        def single(value) -> int | None:
            pair = value if isinstance(value, tuple) else (value, value)
            return pair[0] if pair[0] == pair[1] else None

        window, stride = single(self.kernel_size), single(self.stride)
        plain = single(self.padding) == 0 and single(self.dilation) == 1 and not self.ceil_mode
        if window is None or stride != window or not plain or self.return_indices:
            return None
        return window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self._window()
        if window is None or x.dim() != 4:
            return super().forward(x)
        return max_pool_window(x, window)
