"""Firing rates of the LIF layers during training: the fraction of neurons that spike, per layer."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import LIF


class SpikeRates:
    """Averages each LIF layer's output spike fraction over the training forwards since the last take()."""

    def __init__(self, model: nn.Module) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        # rate observers, not forward hooks: a hook on a LIF layer would turn off its fusion with batch norm, and
        # a spike observer its fusion with pooling
        self.handles = [module.observe_firing_rate(self._observer(name))
                        for name, module in model.named_modules() if isinstance(module, LIF)]  # fmt: skip

    def _observer(self, name: str):
        def record(module: nn.Module, rate: torch.Tensor) -> None:
            if module.training and torch.is_grad_enabled():
                self.sums[name] = self.sums.get(name, 0.0) + rate  # no sync
                self.counts[name] = self.counts.get(name, 0) + 1

        return record

    def state_dict(self) -> dict[str, dict]:
        """The running sums and counts since the last take(), so that a resumed run reports the same rates."""
        return {"sums": {name: value.detach().cpu() for name, value in self.sums.items()}, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        self.sums, self.counts = dict(state["sums"]), {name: int(n) for name, n in state["counts"].items()}

    def take(self) -> dict[str, float]:
        rates = {name: float(self.sums[name]) / self.counts[name] for name in self.sums}
        self.sums, self.counts = {}, {}
        return rates

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
