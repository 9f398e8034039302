"""The training loop of `ndsnn train`: a spiking model, a sparsity method, BPTT with surrogate gradients.

One step: images -> augmentation (a generator seeded by seed, epoch and batch, so a resumed run draws the same
crops) -> logits [T, N, K] -> loss (mean over T of the cross-entropy) -> backward -> optimizer step -> sparsity
method step (masks change on its schedule; pruned weights and their optimizer state stay zero) -> cost and
spike-rate accounting. Each epoch ends with an evaluation, a metrics line and a checkpoint; a checkpoint also
every `checkpoint_interval` steps. A run is `epochs` epochs long (a fraction of an epoch allowed: the run is
then that many steps, rounded); a method that trains in rounds (LTH) trains that long per round, for all of its
rounds, and a round may end within an epoch. A loss that is not finite stops the run before its optimizer step
(TrainingDiverged), so the last checkpoint stays good. A schedule too short for its method's mask updates is
said once, as a warning with the numbers and what to change (SparseMethod.schedule_problem).

Several processes (torchrun): each trains on its shard of every epoch's permutation, DDP averages gradients,
so the methods' decisions (and masks) agree on every rank; metrics are summed over ranks, batch-norm
statistics averaged before every evaluation, and rank 0 writes the files.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__, cpu_allocator, models, sparse
from ..data import augment_batch, load_dataset, normalize_batch
from ..models import per_step_cross_entropy
from ..nn.convert import masked_modules
from ..ops import dispatch
from ..sparse.kept_optimizer import KeptOnlyOptimizer
from ..sparse.methods.base import MIN_STEPS_BETWEEN_UPDATES
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError, TrainConfig, is_device_name
from .cost import TrainingCost
from .distributed import DistContext, masks_digest
from .metrics import MetricsLog
from .spike_rates import SpikeRates

CHECKPOINT_NAME = "checkpoint.pt"
# What a training checkpoint must hold to be resumed.
CHECKPOINT_KEYS = ("config", "epoch", "batch", "step", "world_size", "model", "optimizer", "method", "cost",
                   "epoch_totals", "best_accuracy", "elapsed", "rng", "spike_rates", "input_rates")  # fmt: skip
# Options that may change when a run is resumed: they do not change its numbers.
RUNTIME_OPTIONS = ("data_dir", "out", "device", "workers", "progress", "log_interval", "checkpoint_interval",
                   "debug_masks", "stop_after_steps", "deterministic")  # fmt: skip


def resolve_device(name: str) -> torch.device:
    if not isinstance(name, str) or not is_device_name(name):
        raise ConfigError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def use_deterministic_algorithms() -> None:
    """Deterministic cuDNN and cuBLAS choices, so that a resumed GPU run repeats the uninterrupted one bit for
    bit (CPU runs are deterministic already). An op with no deterministic CUDA version warns instead of failing.
    The sparse layers then choose their kernels from the shipped crossover table instead of timing them."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def local_cuda_device(local_rank: int) -> torch.device:
    """This process's GPU under torchrun: one GPU per process, found by LOCAL_RANK."""
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"--device cuda: this process has LOCAL_RANK {local_rank} but only {count} GPU(s) are visible; start "
            f"at most {count} process(es) per node with torchrun --nproc_per_node, or train on --device cpu"
        )
    return torch.device("cuda", local_rank)


def default_update_interval(run_steps: int) -> int:
    """Steps between mask updates when --update-interval is not given: a 25th of the run, at most 100."""
    return max(1, min(100, run_steps // 25))


class ScheduleWarning(UserWarning):
    """A method's schedule is too short for its mask updates to change the masks sensibly."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message says where, and which checkpoint is still good."""


class Trainer:
    """Builds everything a run needs from a TrainConfig; `fit()` trains (or resumes) and returns the summary."""

    def __init__(self, config: TrainConfig, out_dir: str | Path) -> None:
        config.validate()
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            cpu_allocator.keep_freed_memory()  # no page faults for every step's big tensors
        if config.deterministic:
            use_deterministic_algorithms()
        dispatch.force_policy("table" if config.deterministic else None)
        self.dist = DistContext.from_environment(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = local_cuda_device(self.dist.local_rank)
            torch.cuda.set_device(self.device)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)

        train_set = load_dataset(config.dataset, "train", config.data_dir)
        self.info = train_set.info
        self.train_set = fixed_subset(train_set, config.train_samples, "train-samples")
        self.test_set = fixed_subset(load_dataset(config.dataset, "test", config.data_dir), config.test_samples,
                                "test-samples")  # fmt: skip
        try:
            self.model = models.create(config.model, self.info.num_classes, self.info.in_channels, config.timesteps,
                                       self.info.image_size).to(self.device)  # fmt: skip
        except ValueError as error:  # a model that cannot take this data set's images
            raise ConfigError(f"--model {config.model} on --dataset {config.dataset}: {error}") from None
        self.optimizer = self._build_optimizer()
        shard = math.ceil(len(self.train_set) / self.dist.world_size)
        self.steps_per_epoch = math.ceil(shard / config.batch_size)
        self.round_steps = max(1, round(config.epochs * self.steps_per_epoch))  # the run's (LTH: a round's) steps
        try:
            self.method = sparse.create(config.method, self.model, self.optimizer, **self._method_options())
        except (TypeError, ValueError) as error:  # an option the method does not take, or a bad value
            raise ConfigError(f"--method {config.method}: {error}") from None
        # the optimizer step over kept weights only (the same numbers as the dense step; the method keeps the
        # wrapped optimizer for its state hygiene)
        self.optimizer = KeptOnlyOptimizer(self.optimizer, self.model)
        self.rounds = self.method.rounds  # LTH trains several rounds
        self.total_steps = self.round_steps * self.rounds
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.schedule_warning = self._schedule_warning()
        self.network: nn.Module = self.model
        if self.dist.enabled:  # after the method: it converts the layers the wrapper must see
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, **_no_buffer_sync())
        hooked = [(n, m) for n, m in masked_modules(self.model) if isinstance(m, nn.Module)]
        self.cost = TrainingCost(hooked)
        self.spikes = SpikeRates(self.model)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", enabled=self.dist.is_main)
        self.epoch = 0  # the epoch in progress (0-based; counts LTH rounds' epochs too)
        self.batch = 0  # batches of that epoch already trained
        self.step = 0
        self.epoch_totals = [0.0, 0.0, 0.0]  # loss sum, correct, samples (this rank)
        self.best_accuracy = 0.0
        self.elapsed = 0.0
        self.last_spike_rates: dict[str, float] = {}
        self.last_input_rates: dict[str, float] = {}
        self.last_epoch_record: dict[str, Any] = {}  # the latest epoch line: what the summary reports
        self.last_saved_step: int | None = None  # the step of the checkpoint on disk, if this run wrote one
        self.layer_densities: dict[str, float] = {}
        self.refresh_densities()
        self.stopped = False

    # -- construction ------------------------------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        parameters = self.model.parameters()
        if c.optimizer == "sgd":
            return torch.optim.SGD(parameters, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        if c.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.AdamW(parameters, lr=c.lr, weight_decay=c.weight_decay)

    def _method_options(self) -> dict[str, Any]:
        c = self.config
        interval = c.update_interval or default_update_interval(self.round_steps)
        options: dict[str, Any] = {"sparsity": c.sparsity, "total_steps": self.round_steps,
                                   "update_interval": interval, "distribution": c.distribution,
                                   "seed": c.seed}  # fmt: skip
        if c.init_density is not None:
            if not sparse.METHODS[c.method].takes_init_density:
                takers = [name for name, method in sparse.METHODS.items() if method.takes_init_density]
                raise ConfigError(f"--init-density applies to --method {', '.join(takers)} only, not {c.method}")
            options["init_density"] = c.init_density
        options.update(c.method_options)
        return options

    def _schedule_warning(self) -> str | None:
        """The method's schedule_problem with what to change, or None (said once: by `ndsnn train` on stderr
        and in metrics.jsonl, and as a Python warning)."""
        problem = self.method.schedule_problem()
        if problem is None:
            return None
        if self.config.update_interval is not None:
            given = self.config.update_interval
            change = f"raise --update-interval (now {given}) to {MIN_STEPS_BETWEEN_UPDATES} or more"
        else:
            steps = 25 * MIN_STEPS_BETWEEN_UPDATES  # the default interval is a 25th of the run
            epochs = math.ceil(steps / self.steps_per_epoch)
            change = (f"train at least {steps} steps (--epochs {epochs} here, at {self.steps_per_epoch} steps an "
                      f"epoch), or set --update-interval {MIN_STEPS_BETWEEN_UPDATES} or more")  # fmt: skip
        message = f"{problem}; {change}"
        warnings.warn(message, ScheduleWarning, stacklevel=3)
        return message

    # -- schedule and data order -------------------------------------------------------------------------
    def round_due(self) -> int:
        """The round the next step belongs to."""
        return min(self.step // self.round_steps, self.rounds - 1)

    def learning_rate(self) -> float:
        """Cosine decay over each round (one round unless LTH), from --lr to 0."""
        if self.config.schedule == "constant":
            return self.config.lr
        position = (self.step - self.round_due() * self.round_steps) / self.round_steps
        return 0.5 * self.config.lr * (1.0 + math.cos(math.pi * min(1.0, max(0.0, position))))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of an epoch: a seeded permutation, padded to a multiple of the world size and
        dealt round-robin (every rank gets the same number of steps)."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_set), generator=generator)
        world = self.dist.world_size
        padded = math.ceil(len(order) / world) * world
        order = torch.cat([order, order[: padded - len(order)]])[self.dist.rank :: world]
        return [chunk.tolist() for chunk in order.split(self.config.batch_size)]

    def _loader(self, dataset, batches: list[list[int]]) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=self.config.workers,
                                           pin_memory=self.device.type == "cuda")  # fmt: skip

    def _inputs(self, images: torch.Tensor, augment_seed: int | None) -> torch.Tensor:
        if augment_seed is not None and (self.info.crop_padding or self.info.flip):
            generator = torch.Generator().manual_seed(augment_seed)
            images = augment_batch(images, self.info.crop_padding, self.info.flip, generator)
        return normalize_batch(images.to(self.device, non_blocking=True), self.info)

    def _augment_seed(self) -> int:
        """The augmentation seed of the current batch: a function of the run's seed and the batch's place."""
        place = (self.epoch * self.steps_per_epoch + self.batch) * self.dist.world_size + self.dist.rank
        return self.config.seed * 1_000_000_007 + place

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp)

    # -- training ----------------------------------------------------------------------------------------
    def fit(self, resume_from: str | Path | None = None) -> dict[str, Any]:
        if resume_from is not None:
            self.load(resume_from)
            self.metrics.start(self.step, source=Path(resume_from).parent / self.metrics.path.name)
        else:
            self.metrics.start(None)
        if resume_from is None and self.dist.is_main:
            self.metrics.write({"kind": "start", "step": 0, "config": self.config.to_dict()})
            if self.schedule_warning:
                self.metrics.write({"kind": "warning", "step": 0, "message": self.schedule_warning})
        started = time.perf_counter() - self.elapsed
        self.stopped = False
        while self.epoch < self.total_epochs and not self.stopped:
            self.train_epoch(started)
            if self.stopped:
                break
            test_loss, test_accuracy, test_count = self.evaluate()
            self.best_accuracy = max(self.best_accuracy, test_accuracy)
            loss_sum, correct, count = self.dist.sum(self.epoch_totals, self.device)
            record = {"kind": "epoch", "epoch": self.epoch + 1, "step": self.step,
                      "train_loss": loss_sum / max(1.0, count), "train_accuracy": correct / max(1.0, count),
                      "test_loss": test_loss, "test_accuracy": test_accuracy, "test_samples": test_count,
                      "density": self.density(),
                      "spike_rate": _mean(self.last_spike_rates), "lr": self.learning_rate(),
                      "cost": self.cost_summary(), "time_s": time.perf_counter() - started}  # fmt: skip
            if self.rounds > 1:
                record["round"] = self.method.round
            self.metrics.write(record)
            self.last_epoch_record = record
            self.epoch, self.batch, self.epoch_totals = self.epoch + 1, 0, [0.0, 0.0, 0.0]
            self.elapsed = time.perf_counter() - started
            self.save()
            if self.config.stop_after_steps is not None and self.step >= self.config.stop_after_steps:
                self.stopped = self.epoch < self.total_epochs
                break
        self.elapsed = time.perf_counter() - started
        return self.summary()

    def train_epoch(self, started: float) -> None:
        self.network.train()
        batches = self.epoch_batches(self.epoch)
        progress = _progress_bar(self, len(batches))
        for images, labels in self._loader(self.train_set, batches[self.batch : self.batch + self.steps_left()]):
            self.start_due_round()
            x, labels = self._inputs(images, self._augment_seed()), labels.to(self.device, non_blocking=True)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate()
            with self._autocast():
                logits = self.network(x)
                loss = per_step_cross_entropy(logits.float(), labels)
                extra = self.method.auxiliary_loss(x)  # a method's own term (attention transfer), or None
                if extra is not None:
                    loss = loss + extra
            loss_value = loss.item()
            self.stop_if_diverged(loss_value)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            updates_before = len(self.method.log)
            self.method.step()
            self.cost.end_step()
            if len(self.method.log) != updates_before:
                self.refresh_densities()
                if self.config.debug_masks:
                    self.check_masks()
            self.step, self.batch = self.step + 1, self.batch + 1
            correct = (logits.detach().float().mean(0).argmax(-1) == labels).sum().item()
            self.epoch_totals = [self.epoch_totals[0] + loss_value * len(labels),
                                 self.epoch_totals[1] + correct, self.epoch_totals[2] + len(labels)]  # fmt: skip
            if self.step % self.config.log_interval == 0 or self.batch == len(batches) or not self.steps_left():
                self._log_step(loss_value, correct / len(labels))
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{self.epoch_totals[0] / self.epoch_totals[2]:.3f}",
                                     acc=f"{100 * self.epoch_totals[1] / self.epoch_totals[2]:.1f}%",
                                     density=f"{self.density():.3f}", spikes=f"{_mean(self.last_spike_rates):.3f}",
                                     refresh=False)  # fmt: skip
            interval = self.config.checkpoint_interval
            stop = self.config.stop_after_steps is not None and self.step >= self.config.stop_after_steps
            more = self.batch < len(batches) and self.steps_left() > 0  # steps of this epoch still to train
            if more and (stop or (interval and self.step % interval == 0)):
                self.elapsed = time.perf_counter() - started
                self.save()
            if stop and more:
                self.stopped = True
                break
        if progress is not None:
            progress.close()

    def steps_left(self) -> int:
        return self.total_steps - self.step

    def start_due_round(self) -> None:
        """At a round boundary (LTH): the method prunes, rewinds and zeroes the optimizer state."""
        while self.method.round < self.round_due():
            if not self.method.next_round():
                raise RuntimeError(f"{self.method.name} has no round {self.method.round + 1} of {self.rounds}")
            self.refresh_densities()

    def _float_state(self):
        """(name, tensor) of every floating-point tensor of the model and the optimizer state."""
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                yield name, value
        for index, state in enumerate(self.optimizer.state.values()):
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    yield f"optimizer state {key} of parameter {index}", value

    def stop_if_diverged(self, loss_value: float, what: str | None = None) -> None:
        """Raises TrainingDiverged when the loss is NaN or infinite on any rank (checked before the optimizer
        step), or when `what` names a tensor that is not finite (checked before a checkpoint is written)."""
        diverged = what is not None or self.dist.any(not math.isfinite(loss_value), self.device)
        if not diverged:
            return
        step = self.step if what else self.step + 1  # a checkpoint's step is done; a loss's is under way
        where = f"at step {step} (epoch {self.epoch + 1})"
        change = f"lower --lr (now {self.config.lr:g})" + (" or train without --amp" if self.config.amp else "")
        if self.last_saved_step is None:
            kept = f"no checkpoint was written before it; start again and {change}"
        else:
            kept = (f"the checkpoint {self.out_dir / CHECKPOINT_NAME} still holds step {self.last_saved_step}; "
                    f"{change} and start again, or resume it to retry")  # fmt: skip
        cause = what or f"the loss is {loss_value}"
        raise TrainingDiverged(f"training diverged: {cause} {where}; {kept}")

    def cost_summary(self) -> dict[str, float]:
        """The layers' training cost, and what the sparsity method spent deciding its masks."""
        return {**self.cost.summary(), "method_decision_ops": float(self.method.decision_ops)}

    def _log_step(self, loss: float, accuracy: float) -> None:
        self.last_spike_rates = self.spikes.take() or self.last_spike_rates
        self.last_input_rates = self.cost.take_input_rates() or self.last_input_rates
        self.metrics.write({"kind": "step", "epoch": self.epoch + 1, "step": self.step, "loss": loss,
                            "accuracy": accuracy, "lr": self.learning_rate(), "density": self.density(),
                            "spike_rate": _mean(self.last_spike_rates),
                            "flops": self.cost.totals["flops_forward"] + self.cost.totals["flops_backward"],
                            "sops": self.cost.totals["sops_forward"] + self.cost.totals["sops_backward"]})  # fmt: skip

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, int]:
        """Test loss, accuracy and sample count over the whole test split (each rank a strided share, summed)."""
        self.dist.average_buffers(self.model)
        self.model.eval()
        indices = list(range(self.dist.rank, len(self.test_set), self.dist.world_size))
        batches = [
            indices[i : i + 2 * self.config.batch_size] for i in range(0, len(indices), 2 * self.config.batch_size)
        ]
        loader = self._loader(self.test_set, batches)
        with self._autocast():
            totals = test_totals(self.model, loader, lambda images: self._inputs(images, None), self.device)
        self.model.train()
        loss_sum, correct, count = self.dist.sum(totals, self.device)
        return loss_sum / max(1.0, count), correct / max(1.0, count), int(count)

    def check_masks(self) -> None:
        masks = [layer.weight_mask for _, layer in self.method.layers]
        self.dist.check_same(masks_digest(masks), f"masks after step {self.step + 1}")

    # -- state -------------------------------------------------------------------------------------------
    def refresh_densities(self) -> None:
        """Counts the masks again: after every mask update, LTH round and resume (the only places the trainer
        changes masks), so that per-step reporting costs no pass over the masks."""
        self.layer_densities = {name: layer.density for name, layer in self.method.layers}
        self.cost.refresh_densities()

    def density(self) -> float:
        """Kept fraction of all sparse weights (the layers the method manages), as of the last mask change."""
        sizes = {name: layer.weight_mask.numel() for name, layer in self.method.layers}
        return sum(sizes[name] * d for name, d in self.layer_densities.items()) / sum(sizes.values())

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "train", "format": 1, "ndsnn": __version__, "config": self.config.to_dict(),
                "epoch": self.epoch, "batch": self.batch, "step": self.step, "world_size": self.dist.world_size,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "method": self.method.state_dict(), "cost": self.cost.state_dict(), "epoch_totals": self.epoch_totals,
                "best_accuracy": self.best_accuracy, "elapsed": self.elapsed, "rng": rng_state(),
                "spike_rates": self.last_spike_rates, "input_rates": self.last_input_rates,
                "spike_rate_sums": self.spikes.state_dict(), "input_rate_sums": self.cost.input_rates_state_dict(),
                "last_epoch": self.last_epoch_record, "dispatch": dispatch.snapshot()}  # fmt: skip

    def save(self) -> None:
        """Writes the checkpoint, unless the model or optimizer state holds a value that is not finite: then
        the run has diverged and the checkpoint on disk (the last good one) is kept."""
        self.dist.average_buffers(self.model)
        bad = next((name for name, value in self._float_state() if not bool(torch.isfinite(value).all())), None)
        if self.dist.any(bad is not None, self.device):
            self.stop_if_diverged(math.nan, f"{bad or 'a tensor on another rank'} is not finite")
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), self.out_dir / CHECKPOINT_NAME)
        self.last_saved_step = self.step
        self.dist.barrier()

    def load(self, path: str | Path) -> None:
        state = load_checkpoint(path)
        missing = [key for key in CHECKPOINT_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(missing)}")
        try:
            self._load_state(path, state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
            if isinstance(error, (ConfigError, CheckpointError)):
                raise
            detail = " ".join(str(error).strip().splitlines()[:2])[:300] or type(error).__name__
            raise CheckpointError(f"{path} does not fit this run: {type(error).__name__}: {detail}") from None

    def _load_state(self, path: str | Path, state: dict[str, Any]) -> None:
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(f"--resume: {path} was written by a run of {state['world_size']} process(es); "
                              f"resume it with the same number, not {self.dist.world_size}")  # fmt: skip
        saved = {k: v for k, v in state["config"].items() if k not in RUNTIME_OPTIONS}
        current = {k: v for k, v in self.config.to_dict().items() if k not in RUNTIME_OPTIONS}
        changed = sorted(k for k in saved if saved[k] != current.get(k))
        if changed:
            raise ConfigError(f"--resume: {path} was trained with other options: "
                              + ", ".join(f"{k}={saved[k]!r} (now {current.get(k)!r})" for k in changed))  # fmt: skip
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.cost.load_state_dict(state["cost"])
        self.refresh_densities()
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.last_saved_step = self.step
        self.epoch_totals, self.best_accuracy = list(state["epoch_totals"]), state["best_accuracy"]
        self.elapsed = state["elapsed"]
        self.last_spike_rates, self.last_input_rates = state["spike_rates"], state["input_rates"]
        if "spike_rate_sums" in state:  # checkpoints written before these were kept lack them
            self.spikes.load_state_dict(state["spike_rate_sums"])
            self.cost.load_input_rates_state_dict(state["input_rate_sums"])
        self.last_epoch_record = dict(state.get("last_epoch") or self._last_epoch_in_log())
        dispatch.preload(state.get("dispatch", {}))  # the kernels the run chose so far, chosen again
        set_rng_state(state["rng"])

    def _last_epoch_in_log(self) -> dict[str, Any]:
        epochs = [r for r in self.metrics.read() if r.get("kind") == "epoch"] if self.dist.is_main else []
        return epochs[-1] if epochs else {}

    def summary(self) -> dict[str, Any]:
        last = self.last_epoch_record
        layer_density = {name: layer.density for name, layer in self.method.layers}
        return {
            "model": self.config.model, "dataset": self.config.dataset, "method": self.config.method,
            "target_sparsity": self.config.sparsity, "sparsity": 1.0 - self.density(),
            "compression_ratio": 1.0 / max(self.density(), 1e-12),
            "test_accuracy": last.get("test_accuracy"), "best_test_accuracy": self.best_accuracy,
            "train_accuracy": last.get("train_accuracy"), "test_loss": last.get("test_loss"),
            "epochs": self.epoch, "steps": self.step, "rounds": self.rounds, "round_steps": self.round_steps,
            "update_interval": self.method.update_interval if self.method.update_steps() else None,
            "timesteps": self.config.timesteps,
            "schedule_warning": self.schedule_warning,
            "training_cost": self.cost_summary(), "layer_density": layer_density,
            "spike_rates": self.last_spike_rates, "input_rates": self.last_input_rates,
            "completed": not self.stopped, "wall_time_s": self.elapsed, "device": str(self.device),
            "world_size": self.dist.world_size,
            "versions": {"ndsnn": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
            "config": self.config.to_dict(),
        }  # fmt: skip


@torch.no_grad()
def test_totals(model: nn.Module, loader, to_inputs, device: torch.device) -> list[float]:
    """[loss sum, correct, samples] of `model` over `loader` (loss: mean over T of the cross-entropy; the
    prediction: the logits averaged over T); to_inputs turns a uint8 image batch into the model's input."""
    totals = [0.0, 0.0, 0.0]
    for images, labels in loader:
        logits = model(to_inputs(images)).float()
        labels = labels.to(device)
        totals[0] += per_step_cross_entropy(logits, labels).item() * len(labels)
        totals[1] += (logits.mean(0).argmax(-1) == labels).sum().item()
        totals[2] += len(labels)
    return totals


def overall_density(layers) -> float:
    """Kept weights over all weights of the given masked layers."""
    sizes_and_densities = [(layer.weight_mask.numel(), layer.density) for layer in layers]
    return sum(n * d for n, d in sizes_and_densities) / sum(n for n, _ in sizes_and_densities)


def _no_buffer_sync() -> dict[str, bool]:
    """DDP must not copy rank 0's buffers at every forward: that would hide masks that diverge (debug_masks
    checks them) and rebuild every layer's kept-weight index; batch-norm statistics are averaged instead."""
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}


def fixed_subset(dataset, count: int | None, option: str):
    """A fixed random subset (the same for every seed, so runs stay comparable), or the whole split."""
    if count is None:
        return dataset
    if count > len(dataset):
        raise ConfigError(f"--{option} is {count}, but the split has only {len(dataset)} samples")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:count]
    return torch.utils.data.Subset(dataset, sorted(order.tolist()))


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


def _progress_bar(trainer: Trainer, total: int):
    if not (trainer.config.progress and trainer.dist.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=trainer.batch, desc=f"epoch {trainer.epoch + 1}/{trainer.total_epochs}",
                unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)  # fmt: skip
