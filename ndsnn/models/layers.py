"""Building blocks of the spiking models, all multi-step: tensors are [T, N, ...] throughout.

Per-frame layers (batch norm, pooling) fold T into the batch, so batch-norm statistics are shared over
time steps and samples (threshold-dependent BN without its scaling, as in Zheng et al., AAAI 2021, and
SpikingJelly's SeqToANNContainer)."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import LIF, MaxPool2d, SparseLinear, SparseSpikingConv2d, batch_norm_then_lif
from ..nn.batch_norm_lif import has_forward_hooks
from ..nn.lif_pool import lif_pool_fusable, repeated_lif_then_max_pool
from ..ops.lif_repeated_pool import MAX_WINDOW as MAX_POOL_WINDOW

# LIF settings of the models of Kim et al. (ECCV 2022, "Exploring lottery ticket hypothesis in spiking
# neural networks"), the setup NDSNN and its baselines are compared in: leak 0.75 (tau = 4/3), hard reset
# to 0, threshold 1, detached reset, arctangent surrogate.
DEFAULT_LIF: dict = {"tau": 4.0 / 3.0, "v_threshold": 1.0, "v_reset": 0.0, "detach_reset": True, "surrogate": "atan"}


def make_lif(options: dict | None) -> LIF:
    """A LIF layer with the models' defaults, updated by `options` (ndsnn.nn.LIF's keyword arguments)."""
    return LIF(**{**DEFAULT_LIF, **(options or {})})


class PerFrame(nn.Module):
    """Runs a single-step module on every frame of a [T, N, ...] sequence by folding T into the batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        steps, batch = x_seq.shape[:2]
        y = self.module(x_seq.flatten(0, 1))
        return y.view(steps, batch, *y.shape[1:])


class ConvBNLIF(nn.Module):
    """Sparse 3x3 (by default) convolution without bias, batch norm over all frames, then LIF spikes (batch norm
    and LIF as one fused op where the layers allow it: ndsnn.nn.batch_norm_then_lif)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 lif: dict | None = None) -> None:  # fmt: skip
        super().__init__()
        self.conv = SparseSpikingConv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.conv.spike_input = True  # in every model it takes the previous layer's spikes
        self.bn = PerFrame(nn.BatchNorm2d(out_channels))
        self.lif = make_lif(lif)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return batch_norm_then_lif(self.bn.module, self.lif, self.conv(x_seq))


class SpikingClassifier(nn.Module):
    """Base of the models: direct input encoding and per-time-step class scores.

    forward(images [N, C, H, W]) -> logits [T, N, classes]. The static image is the input current at every
    step (direct encoding): the stem convolution and its batch norm are computed once and repeated over T,
    which equals running them on T identical frames. Predictions average the logits over T; the training
    loss is the mean over T of the per-step cross-entropy (ndsnn.models.loss)."""

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        if not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
        self.timesteps = timesteps

    def encode(self, images: torch.Tensor, stem: nn.Module) -> torch.Tensor:
        """The stem's output on the image, repeated over the T steps: [T, N, ...] (a view, not a copy)."""
        current = self.stem_current(images, stem)
        return current.expand(self.timesteps, *current.shape)

    def stem_current(self, images: torch.Tensor, stem: nn.Module) -> torch.Tensor:
        """The stem's output on the image, once: [N, ...], the input current of the first neurons at every step."""
        if images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        return stem(images.unsqueeze(0))[0]

    def fire_stem(
        self, images: torch.Tensor, stem: nn.Module, neurons: LIF, pool: nn.Module | None = None
    ) -> torch.Tensor:
        """The first neurons' spikes [T, N, ...] under the stem's output at every step, computed from the one
        frame (LIF's steps argument) rather than from T stored copies of it; then pool(spikes) if a pool is
        given. A PerFrame(ndsnn.nn.MaxPool2d) pool of window = stride runs fused with the neurons
        (ndsnn.nn.lif_pool), which never stores the full-size spikes."""
        current = self.stem_current(images, stem)
        window = fusable_pool_window(pool) if pool is not None else None
        if window is not None and current.dim() == 4 and lif_pool_fusable(neurons):
            return repeated_lif_then_max_pool(neurons, current, self.timesteps, window)
        spikes = neurons(current, steps=self.timesteps)
        return spikes if pool is None else pool(spikes)


def fusable_pool_window(pool: nn.Module) -> int | None:
    """The window of a PerFrame(ndsnn.nn.MaxPool2d) pooling that ndsnn's pooling kernel computes (window =
    stride, no padding, floor), with no hooks on either module; None for any other pooling."""
    if (
        type(pool) is not PerFrame
        or type(pool.module) is not MaxPool2d
        or has_forward_hooks(pool)
        or has_forward_hooks(pool.module)
    ):
        return None
    window = pool.module._window()
    return window if window is not None and window <= MAX_POOL_WINDOW else None


def per_step_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over T of the cross-entropy of each step's logits [T, N, K] (the loss of Kim et al. and NDSNN)."""
    steps = logits.shape[0]
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.repeat(steps))


def stem_conv(in_channels: int, out_channels: int) -> nn.Module:
    """The first convolution and its batch norm, without neurons: it sees the real-valued image."""
    conv = SparseSpikingConv2d(in_channels, out_channels, 3, 1, 1, bias=False)
    conv.spike_input = False
    return nn.Sequential(PerFrame(conv), PerFrame(nn.BatchNorm2d(out_channels)))


def classifier_linear(in_features: int, out_features: int, spikes: bool = True) -> SparseLinear:
    """A fully connected layer; spikes: whether its input is spikes (else real-valued, e.g. pooled averages).
    Saying so spares the dispatcher a pass counting the input's nonzeros at every call."""
    linear = SparseLinear(in_features, out_features)
    linear.spike_input = spikes
    return linear
