"""The comparison on Fashion-MNIST: which methods, sparsities and seeds, and the training budget of each run.

Every run of a sweep uses the same model, epochs, time steps, optimizer and seeds; only the method and the
target sparsity change. "dense" is the same network trained without pruning (static masks at density 1), once
per seed. Budgets:
- "cpu": small enough for a 2-core CPU (a fixed 3000-image training subset and 2000-image test subset,
  3 epochs, T = 2: about 20-60 s a run there, 110 runs' worth with LTH's rounds); LTH prunes 50% per round
  instead of 25% so that its rounds stay few.
- "gpu": the whole training split, 30 epochs, T = 4, LTH at 25% per round (the papers' setting).
The chosen settings are written into the results, so a table always says what produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

METHODS = ("dense", "static", "set", "rigl", "lth", "ndsnn", "criticality", "pq_index", "attention")
SPARSITIES = (0.9, 0.95, 0.98, 0.99)


@dataclass(frozen=True)
class Budget:
    name: str
    dataset: str = "fashion-mnist"
    model: str = "convnet"
    epochs: int = 3
    timesteps: int = 2
    batch_size: int = 64
    lr: float = 0.1
    train_samples: int | None = 3000
    test_samples: int | None = 2000
    seeds: tuple[int, ...] = (0, 1)
    sparsities: tuple[float, ...] = SPARSITIES
    methods: tuple[str, ...] = METHODS
    lth_prune_rate: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Raises ValueError naming the first setting no sweep could run with (before any run starts)."""
        for name in ("epochs", "timesteps", "batch_size"):
            _positive(name, getattr(self, name))
        for name in ("train_samples", "test_samples"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"--seeds must be non-negative integers, got {' '.join(map(str, self.seeds))}")
        if not self.sparsities or any(not 0.0 <= s < 1.0 for s in self.sparsities):
            raise ValueError(f"--sparsities must be in [0, 1), got {' '.join(map(str, self.sparsities))}")
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"--methods must be among {', '.join(METHODS)}, got {' '.join(self.methods)}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


BUDGETS: dict[str, Budget] = {
    "cpu": Budget("cpu"),
    "gpu": Budget(
        "gpu", epochs=30, timesteps=4, train_samples=None, test_samples=None, seeds=(0, 1, 2), lth_prune_rate=0.25
    ),
}
