"""The stem's LIF neurons and the max pooling after them as one op (ndsnn.ops.lif_repeated_max_pool) where the
layers allow it: the full-size spikes of a convnet's first layer are then never stored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..ops.lif_repeated_pool import lif_repeated_max_pool
from .batch_norm_lif import has_forward_hooks
from .lif import LIF

_fusion_enabled = True


@contextlib.contextmanager
def lif_pool_fusion(enabled: bool) -> Iterator[None]:
    """Within the block, repeated_lif_then_max_pool fuses (True, the default) or runs LIF and pooling apart
    (False: for comparisons and benchmarks; values and gradients are equal)."""
    global _fusion_enabled
    previous, _fusion_enabled = _fusion_enabled, bool(enabled)
    try:
        yield
    finally:
        _fusion_enabled = previous


def lif_pool_fusable(neurons: torch.nn.Module) -> bool:
    """Whether these neurons may run fused with the pooling after them: a plain LIF module without hooks, without
    observers of its full spikes (rate observers are served) and without a stored membrane potential."""
    return (
        _fusion_enabled
        and type(neurons) is LIF
        and not has_forward_hooks(neurons)
        and not neurons.has_spike_observers()
        and not neurons.store_h
    )


def repeated_lif_then_max_pool(neurons: LIF, current: torch.Tensor, steps: int, window: int) -> torch.Tensor:
    """max_pool2d(neurons(current, steps=steps) per step, window) for current [N, C, H, W], as one op; the rate
    observers of the neurons get their firing rate. Call it only where lif_pool_fusable(neurons)."""
    pooled, fired = lif_repeated_max_pool(
        current,
        steps,
        window,
        neurons.tau,
        neurons.v_threshold,
        neurons.v_reset,
        neurons.decay_input,
        neurons.detach_reset,
        neurons.surrogate,
        neurons.alpha,
    )
    neurons.last_h = None
    if getattr(neurons, "_rate_observers", None):  # modules built before rate observers existed have none
        neurons.notify_firing_rate(fired.to(torch.float32) / max(1, steps * current.numel()))
    return pooled
