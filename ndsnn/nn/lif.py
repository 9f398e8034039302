"""``ndsnn.nn.LIF``: multi-step LIF neurons as a module, with optional learnable threshold and leak."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..ops.lif import check_lif_args, lif
from ..ops.lif_repeated import lif_repeated

# Smallest tau a learnable leak can reach: keeps tau > 1 (the op's requirement) when the leak saturates.
MIN_LEARNED_TAU = 1.0 + 2.0**-16


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons over a whole sequence x_seq [T, N, ...] (SpikingJelly's LIFNode,
    multi-step mode), computed by the fused kernel.

    Each call starts from v = v_reset and runs all T steps; the module keeps no state between calls.
    learnable_threshold / learnable_tau make v_threshold / the leak parameters, per layer or, with
    num_channels=C, per channel (dim 2 of x_seq). The leak is learned as w with 1/tau = sigmoid(w), as in
    SpikingJelly's ParametricLIFNode, so tau stays > 1. With store_h, the membrane potential before reset
    of the last call is kept (detached) in ``last_h``, for criticality scoring.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: str = "atan",
        learnable_threshold: bool = False,
        learnable_tau: bool = False,
        *,
        alpha: float | None = None,
        num_channels: int | None = None,
        saved_dtype: torch.dtype | None = None,
        store_h: bool = False,
    ) -> None:
        super().__init__()
        check_lif_args(torch.empty(1, 1), tau, v_threshold, v_reset, surrogate, alpha, saved_dtype)
        if num_channels is not None and (not isinstance(num_channels, int) or num_channels < 1):
            raise ValueError(f"num_channels must be a positive int or None, got {num_channels!r}")
        shape = (num_channels,) if num_channels is not None else ()
        self.v_reset = v_reset
        self.decay_input = decay_input
        self.detach_reset = detach_reset
        self.surrogate = surrogate
        self.alpha = alpha
        self.num_channels = num_channels
        self.saved_dtype = saved_dtype
        self.store_h = store_h
        self.last_h: torch.Tensor | None = None
        self._spike_observers: OrderedDict[int, Callable[[LIF, torch.Tensor], None]] = OrderedDict()
        self._rate_observers: OrderedDict[int, Callable[[LIF, torch.Tensor], None]] = OrderedDict()
        self._tau = float(tau)
        self._v_threshold = float(v_threshold)
        self.tau_logit = nn.Parameter(torch.full(shape, -math.log(tau - 1.0))) if learnable_tau else None
        self.threshold = nn.Parameter(torch.full(shape, float(v_threshold))) if learnable_threshold else None
        if num_channels is not None and not learnable_tau:
            self.register_buffer("tau_values", torch.full(shape, float(tau)))
        else:
            self.tau_values = None
        if num_channels is not None and not learnable_threshold:
            self.register_buffer("threshold_values", torch.full(shape, float(v_threshold)))
        else:
            self.threshold_values = None

    def observe_spikes(self, observer: Callable[[LIF, torch.Tensor], None]) -> RemovableHandle:
        """Calls observer(self, spikes) with this layer's output at every forward, also where a fused op computes
        it (ndsnn.nn.batch_norm_then_lif), which a forward hook would turn off. Ops that never store the full
        spikes (the stem's LIF fused with pooling) are turned off while a spike observer is registered; an
        observer that needs only the firing rate should use observe_firing_rate. Returns a handle to remove it."""
        handle = RemovableHandle(self._spike_observers)
        self._spike_observers[handle.id] = observer
        return handle

    def observe_firing_rate(self, observer: Callable[[LIF, torch.Tensor], None]) -> RemovableHandle:
        """Calls observer(self, rate) at every forward with the fraction of this layer's neurons and steps that
        fired (a 0-dim float tensor, not synchronised), whichever op computed the spikes, including fused ops that
        never store them. Returns a handle to remove it."""
        handle = RemovableHandle(self._rate_observers)
        self._rate_observers[handle.id] = observer
        return handle

    def has_spike_observers(self) -> bool:
        """Whether an observer needs this layer's full spikes (observe_spikes)."""
        return bool(getattr(self, "_spike_observers", None))

    def notify_observers(self, spikes: torch.Tensor) -> torch.Tensor:
        """Hands spikes to the observers (observe_spikes, and their rate to observe_firing_rate's) and returns
        them: the last step of every forward."""
        for observer in getattr(self, "_spike_observers", {}).values():
            observer(self, spikes)
        rate_observers = getattr(self, "_rate_observers", {})
        if rate_observers:
            rate = spikes.detach().float().mean()
            for observer in rate_observers.values():
                observer(self, rate)
        return spikes

    def notify_firing_rate(self, rate: torch.Tensor) -> None:
        """Hands the firing rate to the rate observers, for ops that never store the spikes."""
        for observer in getattr(self, "_rate_observers", {}).values():
            observer(self, rate)

    @torch.no_grad()
    def make_learnable(self, threshold: bool = True, tau: bool = True) -> list[nn.Parameter]:
        """Turns the threshold and / or the leak into parameters starting at their current values (per
        channel if the layer has num_channels); returns the new parameters, for the optimizer."""
        created = []
        if threshold and self.threshold is None:
            current = self.v_threshold
            value = current.detach().clone() if isinstance(current, torch.Tensor) else torch.tensor(float(current))
            self.threshold_values = None
            self.threshold = nn.Parameter(value.float())
            created.append(self.threshold)
        if tau and self.tau_logit is None:
            current = self.tau
            value = current.detach().clone() if isinstance(current, torch.Tensor) else torch.tensor(float(current))
            self.tau_values = None
            self.tau_logit = nn.Parameter(-torch.log(value.float() - 1.0))
            created.append(self.tau_logit)
        return created

    @property
    def tau(self) -> float | torch.Tensor:
        """The membrane time constant: a float, or a tensor when learnable or per channel."""
        if self.tau_logit is not None:  # in float32 even for a 16-bit module: 1 + 2^-16 must not round to 1
            logit = self.tau_logit if self.tau_logit.dtype == torch.float64 else self.tau_logit.float()
            return (1.0 + torch.exp(-logit)).clamp_min(MIN_LEARNED_TAU)
        return self.tau_values if self.tau_values is not None else self._tau

    @property
    def v_threshold(self) -> float | torch.Tensor:
        if self.threshold is not None:
            return self.threshold
        return self.threshold_values if self.threshold_values is not None else self._v_threshold

    def forward(self, x_seq: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Spikes [T, N, ...] of x_seq [T, N, ...]; or, with steps, of x_seq taken as one frame [N, ...] that is
        the input at each of `steps` steps (direct encoding: ndsnn.ops.lif_repeated, which stores neither the
        repeated input nor h)."""
        options = {"tau": self.tau, "v_threshold": self.v_threshold, "v_reset": self.v_reset,
                   "decay_input": self.decay_input, "detach_reset": self.detach_reset, "surrogate": self.surrogate,
                   "alpha": self.alpha}  # fmt: skip
        if steps is not None and not self.store_h:
            self.last_h = None
            return self.notify_observers(lif_repeated(x_seq, steps, **options))
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must be a positive int or None, got {steps!r}")
            x_seq = x_seq.expand(steps, *x_seq.shape)
        spikes, h = lif(x_seq, **options, return_h=True, saved_dtype=self.saved_dtype)
        self.last_h = h.detach() if self.store_h else None
        return self.notify_observers(spikes)

    def extra_repr(self) -> str:
        parts = [
            f"tau={'learnable' if self.tau_logit is not None else self._tau}",
            f"v_threshold={'learnable' if self.threshold is not None else self._v_threshold}",
            f"v_reset={self.v_reset}",
            f"decay_input={self.decay_input}",
            f"detach_reset={self.detach_reset}",
            f"surrogate={self.surrogate}",
        ]
        if self.num_channels is not None:
            parts.append(f"num_channels={self.num_channels}")
        return ", ".join(parts)


def learnable_like(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Makes the threshold / leak of every LIF layer learnable where `state_dict` holds them as parameters
    (a model trained with learned neurons, e.g. by the attention method), so that it loads into a freshly
    built model. Returns model."""
    for name, module in model.named_modules():
        if isinstance(module, LIF):
            prefix = f"{name}." if name else ""
            module.make_learnable(threshold=prefix + "threshold" in state_dict, tau=prefix + "tau_logit" in state_dict)
    return model
