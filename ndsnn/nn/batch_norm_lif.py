"""Batch norm followed by LIF as one fused op where the layers allow it: the models' conv -> BN -> LIF step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..ops.batch_norm_lif import batch_norm_lif
from .lif import LIF

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_fusion_enabled = True


@contextlib.contextmanager
def batch_norm_lif_fusion(enabled: bool) -> Iterator[None]:
    """Within the block, batch_norm_then_lif fuses (True, the default) or runs the two layers separately
    (False: for comparisons and benchmarks; the results agree up to float rounding)."""
    global _fusion_enabled
    previous, _fusion_enabled = _fusion_enabled, bool(enabled)
    try:
        yield
    finally:
        _fusion_enabled = previous


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether forward (pre-)hooks watch the module: a fused op would hide its own call from them."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def fusable(bn: nn.Module, lif: nn.Module, x_seq: torch.Tensor) -> bool:
    """Whether batch_norm_then_lif hands these layers to the fused op: plain BatchNorm and LIF modules without
    hooks, a fixed scalar threshold and leak, no stored membrane potential (the op itself runs unfused
    where its kernels cannot: longer sequences, devices without a kernel)."""
    return (
        _fusion_enabled
        and type(bn) in _BATCH_NORMS
        and type(lif) is LIF
        and not (has_forward_hooks(bn) or has_forward_hooks(lif))
        and lif.tau_logit is None
        and lif.threshold is None
        and lif.tau_values is None
        and lif.threshold_values is None
        and not lif.store_h
        and x_seq.dim() >= 3
        and x_seq.shape[2] == bn.num_features
    )


def _momentum(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """The averaging factor of this call, counting the batch as nn.BatchNorm's forward does."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return factor


def batch_norm_then_lif(bn: nn.Module, lif: nn.Module, x_seq: torch.Tensor,
                        residual: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """lif(bn(x_seq) + residual) for x_seq [T, N, C, ...], bn applied to every frame (statistics over T and N);
    one fused op (ndsnn.ops.batch_norm_lif) when `fusable`, else the two modules."""
    if not fusable(bn, lif, x_seq):
        steps, batch = x_seq.shape[:2]
        y = bn(x_seq.flatten(0, 1)).view(steps, batch, *x_seq.shape[2:])
        return lif(y if residual is None else y + residual)
    momentum = _momentum(bn)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    tracked = not bn.training or bn.track_running_stats
    spikes = batch_norm_lif(
        x_seq,
        bn.running_mean if tracked else None,
        bn.running_var if tracked else None,
        bn.weight,
        bn.bias,
        batch_stats,
        momentum,
        bn.eps,
        lif.tau,
        lif.v_threshold,
        lif.v_reset,
        lif.decay_input,
        lif.detach_reset,
        lif.surrogate,
        lif.alpha,
        residual=residual,
    )
    return lif.notify_observers(spikes)
