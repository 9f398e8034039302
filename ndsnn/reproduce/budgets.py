"""The comparison on Fashion-MNIST: which methods, sparsities and seeds, and the training budget of each run.

Every run of a sweep uses the same model, epochs, time steps, optimizer and seeds; only the method and the
target sparsity change. "dense" is the same network trained without pruning (static masks at density 1), once
per seed. Two kinds of extra rows:
- equal cost, (method, reference) pairs: the method run again with its training length scaled so that its
  training FLOPs (as the trainer counts them) match the reference's run at the same sparsity and seed, e.g.
  LTH at NDSNN's cost (LTH keeps its rounds and prune rate; each round gets a share of NDSNN's FLOPs, a fraction
  of an epoch where that is all they buy) and NDSNN at LTH's cost (more epochs);
- peers: the dense network trained by another framework (SpikingJelly 2.0's neurons, ndsnn.reproduce.peer),
  the check that ndsnn's dense network trains as SpikingJelly's does.

Budgets:
- "cpu": small enough for a 2-core CPU (a fixed 3000-image training subset and 2000-image test subset,
  3 epochs, T = 2: about 20-60 s a run there); LTH prunes 50% per round instead of 25% so that its rounds
  stay few.
- "full": the whole of Fashion-MNIST (60000 training and 10000 test images), T = 4, 2 epochs at batch 128
  with Adam (lr 1e-3, no weight decay; dense reaches 90% test accuracy), the papers' main comparison at 90%
  and 99%: dense / SET / RigL / LTH (its full schedule and at NDSNN's cost) / NDSNN / criticality,
  SpikingJelly's dense run, two seeds; about three hours on a 2-core CPU, resumable.
- "gpu": the whole training split, 30 epochs, T = 4, LTH at 25% per round (the papers' setting).
The chosen settings are written into the results, so a table always says what produced it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..sparse import METHODS as SPARSE_METHODS


def sweep_methods() -> tuple[str, ...]:
    """What a sweep can run: dense, then every registered sparsity method (a new method joins by registering)."""
    return ("dense", *SPARSE_METHODS)


SPARSITIES = (0.9, 0.95, 0.98, 0.99)
PEERS = ("spikingjelly",)
LTH_FAST = {"lth": {"prune_rate": 0.5}}  # half the remaining weights per round: few rounds on small budgets


@dataclass(frozen=True)
class Budget:
    name: str
    dataset: str = "fashion-mnist"
    model: str = "convnet"
    epochs: int | float = 3
    timesteps: int = 2
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    train_samples: int | None = 3000
    test_samples: int | None = 2000
    seeds: tuple[int, ...] = (0, 1)
    sparsities: tuple[float, ...] = SPARSITIES
    methods: tuple[str, ...] = field(default_factory=sweep_methods)
    method_options: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(LTH_FAST))
    equal_cost: tuple[tuple[str, str], ...] = ()  # (method, reference): the method at the reference's FLOPs
    peers: tuple[str, ...] = ()  # other frameworks' dense runs
    extra: dict[str, Any] = field(default_factory=dict)  # more `ndsnn train` options for every run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Raises ValueError naming the first setting no sweep could run with (before any run starts)."""
        if (
            isinstance(self.epochs, bool)
            or not isinstance(self.epochs, (int, float))
            or not (math.isfinite(self.epochs) and self.epochs > 0)
        ):
            raise ValueError(f"--epochs must be a positive number, got {self.epochs!r}")
        for name in ("timesteps", "batch_size"):
            _positive(name, getattr(self, name))
        for name in ("train_samples", "test_samples"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"--seeds must be non-negative integers, got {' '.join(map(str, self.seeds))}")
        if not self.sparsities or any(not 0.0 <= s < 1.0 for s in self.sparsities):
            raise ValueError(f"--sparsities must be in [0, 1), got {' '.join(map(str, self.sparsities))}")
        known = sweep_methods()
        if not self.methods or any(m not in known for m in self.methods):
            raise ValueError(f"--methods must be among {', '.join(known)}, got {' '.join(self.methods)}")
        for method, reference in self.equal_cost:
            if method == "dense" or reference == "dense" or method == reference:
                raise ValueError(f"equal cost pairs two different sparsity methods, got ({method}, {reference})")
        if any(peer not in PEERS for peer in self.peers):
            raise ValueError(f"peers must be among {', '.join(PEERS)}, got {' '.join(self.peers)}")

    def cost_pairs(self) -> tuple[tuple[str, str], ...]:
        """The equal-cost pairs whose two methods are both in this sweep."""
        return tuple((m, r) for m, r in self.equal_cost if m in self.methods and r in self.methods)


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


BUDGETS: dict[str, Budget] = {
    "cpu": Budget("cpu", equal_cost=(("lth", "ndsnn"), ("ndsnn", "lth")), peers=PEERS),
    "full": Budget(
        "full",
        epochs=2,
        timesteps=4,
        batch_size=128,
        lr=1e-3,
        optimizer="adam",
        extra={"weight_decay": 0.0},
        train_samples=None,
        test_samples=None,
        sparsities=(0.9, 0.99),
        methods=("dense", "set", "rigl", "lth", "ndsnn", "criticality"),
        equal_cost=(("lth", "ndsnn"),),
        peers=PEERS,
    ),  # fmt: skip
    "gpu": Budget(
        "gpu",
        epochs=30,
        timesteps=4,
        train_samples=None,
        test_samples=None,
        seeds=(0, 1, 2),
        method_options={"lth": {"prune_rate": 0.25}},
        equal_cost=(("lth", "ndsnn"), ("ndsnn", "lth")),
    ),  # fmt: skip
}
