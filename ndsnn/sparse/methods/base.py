"""The engine every sparsity method shares: which layers are sparse, their masks, the update cadence, exact
drop / grow with optimizer-state hygiene, state for resuming, and a per-update log.

Usage: ``loss.backward(); optimizer.step(); method.step()``. Masks live in the layers (bool ``weight_mask``
buffers of ndsnn.nn sparse layers; plain nn.Conv2d / nn.Linear are converted in place), so they are saved
with the model. After every step pruned weights and their optimizer state are zero.

Two misuses are refused rather than left to corrupt training silently: a second method on layers that one
already manages (their decisions would fight over the masks), and ``method.step()`` before
``optimizer.step()`` (the optimizer would then apply a dense gradient to weights the method just pruned):
hooks on the managed weights' gradients and on the optimizer see the order, and the optimizer step that
would follow a misplaced ``method.step()`` raises instead. ``method.close()`` releases the layers.
"""

from __future__ import annotations

import itertools
import weakref

import torch
import torch.distributed as dist
from torch import nn

from ...nn.convert import masked_modules, sparsify
from ...nn.masked_module import MaskedModuleWeight
from ...nn.masking import weight_state, zero_pruned_
from ...nn.sparse_layers import MaskedWeight, SparseLinear, SparseSpikingConv2d
from ..density import check_density, kept_counts, layer_densities
from ..masks import magnitude_mask, random_mask, top_k_mask
from ..topk import grow_topk

# The method that manages each masked layer (weak on both sides: a discarded method frees its layers).
_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# A schedule whose mask updates come closer than this many steps gives grown weights too little training
# before the next update ranks them (by magnitude, where they start at zero): the trainer warns.
MIN_STEPS_BETWEEN_UPDATES = 10


class SparseMethod:
    """Base class: subclasses set `name` and implement `update()` (and `initial_density()` if not final).

    What the trainer (and the sweep) ask of a method is declared here with defaults, so that neither ever
    branches on a method's name: `takes_init_density`, `rounds` / `round` / `next_round()` (training in
    rounds, LTH), `auxiliary_loss(images)` (a term of the method's own in the loss), `wants_dense_gradient()`
    and `tracks_gradient_momentum()` (dense weight gradients), and `schedule_problem()` (a schedule too short
    to change the masks sensibly). A new method is one file with a subclass and one line in the registry
    (ndsnn.sparse.methods.METHODS)."""

    name = "base"
    takes_init_density = False  # whether --init-density (a starting density above the target) applies

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sparsity: float = 0.9,
        total_steps: int | None = None,
        update_interval: int = 100,
        distribution: str = "erk",
        keep_first_dense: bool = False,
        keep_last_dense: bool = False,
        seed: int = 0,
        mask_init: str = "random",
        extra_modules: tuple[type[nn.Module], ...] = (),
    ) -> None:
        if not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        if not isinstance(update_interval, int) or update_interval <= 0:
            raise ValueError(f"update_interval must be a positive integer, got {update_interval!r}")
        if mask_init not in ("random", "magnitude"):
            raise ValueError(f"mask_init must be 'random' or 'magnitude', got {mask_init!r}")
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps <= 0):
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        self.model, self.optimizer = sparsify(model), optimizer
        for module in self.model.modules():  # other module types with a weight, masked in place
            if extra_modules and isinstance(module, extra_modules) and not isinstance(module, MaskedWeight):
                MaskedModuleWeight(module)
        self.density = 1.0 - sparsity
        self.total_steps, self.update_interval, self.distribution = total_steps, update_interval, distribution
        self.generator = torch.Generator().manual_seed(seed)
        layers = list(masked_modules(self.model))
        if keep_first_dense and layers:
            layers = layers[1:]
        if keep_last_dense and layers:
            layers = layers[:-1]
        if not layers:
            raise ValueError("the model has no Conv2d / Linear layer to make sparse")
        for name, layer in layers:
            owner = _OWNERS.get(layer)
            if owner is not None and owner() is not None:
                raise ValueError(f"layer {name!r} is already managed by a {owner().name!r} sparsity method: one "
                                 "method per model (call that method's close() to replace it)")  # fmt: skip
        self.layers: list[tuple[str, MaskedWeight]] = layers
        for _, layer in layers:
            _OWNERS[layer] = weakref.ref(self)
        self._clock = itertools.count(1)
        self._last_gradient = self._last_method_step = self._last_optimizer_step = 0
        self._hooks = self._order_hooks()
        self.step_count = 0
        self.round = 0  # the training round in progress (0 unless the method trains in rounds)
        self.decision_ops = 0  # elements scanned to decide masks (scores, rankings): the method's own cost
        self.log: list[dict] = []
        self.gradient_momentum: dict[str, torch.Tensor] = {}
        self.momentum_beta = 0.9
        initial = self.initial_density()
        check_density(initial, "initial density")
        for (_, layer), kept in zip(self.layers, self.kept_targets(initial), strict=True):
            if mask_init == "magnitude":
                layer.set_mask(magnitude_mask(layer.weight, kept))
            else:
                layer.set_mask(random_mask(tuple(layer.weight.shape), kept, self.generator, layer.weight.device))
        zero_pruned_(self.model, self.optimizer)
        if self.tracks_gradient_momentum():
            for _, layer in self.layers:
                layer.dense_weight_grad = True

    # -- what subclasses decide ---------------------------------------------------------------------------
    def initial_density(self) -> float:
        return self.density

    def update(self) -> dict:
        """Change the masks; returns what the log should record for this update."""
        return {}

    def wants_dense_gradient(self) -> bool:
        """Whether the next update ranks pruned weights by their gradient (then the backward before it
        computes the dense weight gradient)."""
        return False

    def tracks_gradient_momentum(self) -> bool:
        """Whether a running average of the dense gradient is kept (the "momentum" criterion); then every
        backward computes the dense weight gradient."""
        return False

    @property
    def rounds(self) -> int:
        """Training rounds, each of the run's length (`total_steps`): 1 unless the method prunes between
        rounds (LTH)."""
        return 1

    def next_round(self) -> bool:
        """Starts the next round (the trainer calls it at each round boundary); False when there is none."""
        return False

    def auxiliary_loss(self, images: torch.Tensor) -> torch.Tensor | None:
        """A term of the method's own that the trainer adds to the loss of this batch; None for none."""
        return None

    # -- the schedule's sanity ---------------------------------------------------------------------------
    def update_steps(self) -> list[int]:
        """The steps of one round (1-based) at which the masks are updated; [] without total_steps."""
        if self.total_steps is None:
            return []
        return [step for step in range(1, self.total_steps + 1) if self.is_update_step(step)]

    def schedule_problem(self) -> str | None:
        """What is wrong with this schedule for the run's length, or None: updates closer together than
        MIN_STEPS_BETWEEN_UPDATES steps (a run too short for its update interval) leave grown weights no time
        to train before they are ranked again, and the masks end where chance put them."""
        steps = self.update_steps()
        if len(steps) < 2:
            return None
        gap = min(later - earlier for earlier, later in itertools.pairwise(steps))
        if gap >= MIN_STEPS_BETWEEN_UPDATES:
            return None
        return (f"{self.name}: {len(steps)} mask updates in a run of {self.total_steps} steps (every {gap} step"
                f"{'s' if gap > 1 else ''}, up to step {steps[-1]}){self.schedule_detail()}: weights grown at one "
                f"update train {gap} step{'s' if gap > 1 else ''} before the next one ranks them, too few for the "
                f"masks to change sensibly")  # fmt: skip

    def schedule_detail(self) -> str:
        """What else the schedule does over its updates, for schedule_problem's message."""
        return ""

    # -- scores -----------------------------------------------------------------------------------------
    CRITERIA = ("magnitude", "gradient", "momentum", "random")

    def score(self, name: str, layer: MaskedWeight, criterion: str) -> torch.Tensor | None:
        """Higher is more important: |weight|, |dense gradient|, |running mean of the dense gradient|, or
        None for random."""
        if criterion == "magnitude":
            return layer.weight.detach().abs()
        if criterion == "gradient":
            if layer.weight.grad is None:
                raise RuntimeError(f"{self.name}: the gradient criterion needs method.step() after backward")
            return layer.weight.grad.detach().abs()
        if criterion == "momentum":
            return self.gradient_momentum[name].abs()
        if criterion == "random":
            return None
        raise ValueError(f"criterion must be one of {', '.join(self.CRITERIA)}; got {criterion!r}")

    # -- the shared machinery ---------------------------------------------------------------------------
    def kept_targets(self, density: float) -> list[int]:
        shapes = [tuple(layer.weight.shape) for _, layer in self.layers]
        return kept_counts(shapes, layer_densities(shapes, density, self.distribution))

    def is_update_step(self, step: int) -> bool:
        within = self.total_steps is None or step <= self.stop_step()
        return step > 0 and step % self.update_interval == 0 and within

    def stop_step(self) -> int:
        return self.total_steps if self.total_steps is not None else 0

    def _order_hooks(self) -> list:
        """Hooks that see backward, optimizer.step() and method.step() in the order they run."""
        reference = weakref.ref(self)

        def gradient_arrived(_parameter: torch.Tensor) -> None:
            method = reference()
            if method is not None:
                method._last_gradient = next(method._clock)

        def before_optimizer_step(_optimizer, _args, _kwargs) -> None:
            method = reference()
            if method is None:
                return
            if method._last_optimizer_step < method._last_gradient < method._last_method_step:
                raise RuntimeError(f"{method.name}: method.step() ran after backward but before optimizer.step(); "
                                   "call it after: loss.backward(); optimizer.step(); method.step()")  # fmt: skip
            method._last_optimizer_step = next(method._clock)

        hooks = [layer.weight.register_post_accumulate_grad_hook(gradient_arrived) for _, layer in self.layers]
        return [*hooks, self.optimizer.register_step_pre_hook(before_optimizer_step)]

    def close(self) -> None:
        """Removes this method's hooks and releases its layers (their masks stay), so another may manage them."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for _, layer in self.layers:
            owner = _OWNERS.get(layer)
            if owner is not None and owner() is self:
                del _OWNERS[layer]

    def step(self) -> None:
        """Call after optimizer.step(): counts the step, updates masks when due, keeps pruned weights zero."""
        self._last_method_step = next(self._clock)
        dense_backward = any(layer.dense_weight_grad for _, layer in self.layers)  # the backward just done
        self.step_count += 1
        if self.tracks_gradient_momentum():
            for name, layer in self.layers:  # before the first update, the first backward is dense too
                if layer.weight.grad is not None:
                    average = self.gradient_momentum.setdefault(name, torch.zeros_like(layer.weight))
                    average.mul_(self.momentum_beta).add_(layer.weight.grad.detach(), alpha=1 - self.momentum_beta)
        if self.is_update_step(self.step_count):
            record = {"step": self.step_count, **self.update()}
            record["density"] = {name: layer.density for name, layer in self.layers}
            self.log.append(record)
            dense_backward = True
        if dense_backward or self.zero_every_step:
            zero_pruned_(self.model, self.optimizer)
        self._set_gradient_flags()

    @property
    def zero_every_step(self) -> bool:
        """Whether pruned weights need zeroing after every step. Sparse layers give pruned weights an exact zero
        gradient unless their backward is dense, so SGD (weight decay, momentum), Adam and AdamW leave zero
        weights and zero state at zero: zeroing is needed only after a dense-gradient backward or a mask change,
        which saves passes over every weight (the bool mask converted and multiplied, for weights and state).
        Other masked modules compute dense gradients, so with any of them every step zeroes."""
        return any(not isinstance(layer, (SparseSpikingConv2d, SparseLinear)) for _, layer in self.layers)

    def _set_gradient_flags(self) -> None:
        """Whether the next backward computes the dense weight gradient (a grow ranks it, or momentum tracks it)."""
        dense_next = self.tracks_gradient_momentum() or (
            self.is_update_step(self.step_count + 1) and self.wants_dense_gradient()
        )
        for _, layer in self.layers:
            layer.dense_weight_grad = dense_next

    @torch.no_grad()
    def drop_and_grow(self, plans: list[tuple[MaskedWeight, int, int, torch.Tensor, torch.Tensor | None]]
                      ) -> list[tuple[int, int, int]]:  # fmt: skip
        """For each (layer, n_drop, n_grow, drop_score, grow_score): drop the n_drop kept weights of lowest
        drop_score; then, for all layers in one selection (ndsnn.sparse.grow_topk: one Triton launch on
        GPU), grow n_grow pruned positions of highest grow_score (random when None). Grown weights and their
        optimizer state start at zero; a position dropped and grown again in the same update is simply kept, with
        its weight and state (as RigL's reference code does by default), and a layer that is whole and stays
        whole is not touched. Returns (dropped, grown, regrown) per layer: the planned counts, and how many of the
        grown positions were among the dropped ones (kept, not reset)."""
        survivors, grow_scores, grow_counts, dropped, before = [], [], [], [], []
        for layer, n_drop, n_grow, drop_score, grow_score in plans:
            mask = layer.weight_mask
            kept = int(mask.sum())
            n_drop = max(0, min(n_drop, kept))
            if kept == mask.numel() and n_grow >= n_drop:  # dense, and dense again after the update
                n_drop = n_grow = 0
            before.append(mask.clone())
            floor = torch.full_like(drop_score, -float("inf"))
            survivors.append(top_k_mask(torch.where(mask, drop_score, floor), kept - n_drop))
            if grow_score is None:
                grow_score = torch.rand(mask.shape, generator=self.generator).to(mask.device)
            grow_scores.append(grow_score.float())
            grow_counts.append(max(0, n_grow))
            dropped.append(n_drop)
            if n_drop or n_grow:
                self.decision_ops += 2 * mask.numel()  # one ranking to drop, one to grow
        grown_masks = grow_topk(grow_scores, [~s for s in survivors], grow_counts)
        result = []
        for (layer, *_), keep, grown, old, n_drop in zip(plans, survivors, grown_masks, before, dropped, strict=True):
            new = grown & ~old  # positions that were pruned before this update
            layer.weight[new] = 0.0
            for value in weight_state(self.optimizer, layer.weight):
                value[new] = 0.0
            layer.set_mask(keep | grown)
            n_grown = int(grown.sum())
            result.append((n_drop, n_grown, n_grown - int(new.sum())))
        return result

    def counts_record(self, counts: list[tuple[int, int, int]],
                      labels: tuple[str, str, str] = ("dropped", "grown", "regrown")) -> dict:  # fmt: skip
        """drop_and_grow's (dropped, grown, regrown) per layer as {layer name: count} entries of a log record."""
        names = [name for name, _ in self.layers]
        return {label: {name: pair[i] for name, pair in zip(names, counts, strict=True)}
                for i, label in enumerate(labels)}  # fmt: skip

    def state_dict(self) -> dict:
        return {
            "name": self.name,
            "step": self.step_count,
            "generator": self.generator.get_state(),
            "log": self.log,
            "decision_ops": self.decision_ops,
            "gradient_momentum": {k: v.clone() for k, v in self.gradient_momentum.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"this state is of method {state.get('name')!r}, not {self.name!r}")
        self.step_count = int(state["step"])
        self.generator.set_state(state["generator"])
        self.log = list(state["log"])
        self.decision_ops = int(state.get("decision_ops", 0))
        self.gradient_momentum = {k: v.clone() for k, v in state.get("gradient_momentum", {}).items()}
        self._set_gradient_flags()


class ScheduledMethod(SparseMethod):
    """A method that starts at init_density and changes masks until stop_fraction of total_steps (required),
    then keeps them: NDSNN, criticality, pq_index."""

    takes_init_density = True

    def __init__(self, *args, init_density: float, stop_fraction: float, **kwargs) -> None:
        if not isinstance(stop_fraction, (int, float)) or not 0.0 < stop_fraction <= 1.0:
            raise ValueError(f"stop_fraction must be in (0, 1], got {stop_fraction!r}")
        self.init_density, self.stop_fraction = init_density, stop_fraction
        super().__init__(*args, **kwargs)
        if self.total_steps is None:
            raise ValueError(f"{self.name} needs total_steps (its schedule runs over training)")
        if init_density < self.density:
            raise ValueError(f"init_density ({init_density}) must be at least the final density ({self.density})")

    def initial_density(self) -> float:
        return self.init_density

    def stop_step(self) -> int:
        return int(self.stop_fraction * self.total_steps)

    def schedule_detail(self) -> str:
        return f", while the density goes from {self.init_density:g} down to {self.density:g}"


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a statistic over the ranks of a process group (each rank measured its own mini-batch), so
    that every rank makes the same decisions from it; the value itself in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value
