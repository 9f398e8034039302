"""The dense network's fidelity check: ndsnn's convnet built from nn layers and SpikingJelly 2.0's multi-step
LIFNode, trained by a plain PyTorch loop with everything else as `ndsnn train` does it (data subset, batch
order, augmentation, normalisation, optimizer, cosine learning rate per step, per-step cross-entropy, evaluation
on the logits averaged over T). Where the two dense runs of one seed end within noise of each other, ndsnn's
layers (LIF kernel, fused batch norm + LIF, sparse layers at density 1) train what SpikingJelly trains.

A peer run writes a summary.json with the trainer's keys that the sweep's table reads. It is short and not
checkpointed: a sweep interrupted during one starts it again.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import cpu_allocator
from ..data import augment_batch, load_dataset, normalize_batch
from ..models import per_step_cross_entropy
from ..train.checkpoint import atomic_write_text
from ..train.config import TrainConfig
from ..train.cost import multiply_accumulates
from ..train.json_safe import dumps
from ..train.trainer import fixed_subset


def spikingjelly_available() -> bool:
    try:
        import spikingjelly.activation_based  # noqa: F401
    except ImportError:
        return False
    return True


class SpikingJellyConvNet(nn.Module):
    """ndsnn's convnet (conv w1 - BN - LIF - [pool] - conv w2 - BN - LIF - pool - fc hidden - LIF - fc classes)
    with nn layers and SpikingJelly's multi-step LIFNode of the same settings (tau 4/3, threshold 1, hard reset
    to 0, detached reset, arctangent surrogate); the stem runs once and is repeated over T, as in ndsnn."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, timesteps: int = 4, image_size: int = 28,
                 widths: tuple[int, int] = (32, 64), hidden: int = 128) -> None:  # fmt: skip
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        def lif() -> nn.Module:
            return neuron.LIFNode(tau=4 / 3, v_threshold=1.0, v_reset=0.0, detach_reset=True,
                                  surrogate_function=surrogate.ATan(), step_mode="m")  # fmt: skip

        two_pools = image_size >= 16
        side = image_size // 4 if two_pools else image_size // 2
        self.timesteps = timesteps
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]))  # fmt: skip
        self.lif1 = lif()
        self.pool1 = layer.SeqToANNContainer(nn.MaxPool2d(2)) if two_pools else nn.Identity()
        self.block = layer.SeqToANNContainer(nn.Conv2d(widths[0], widths[1], 3, padding=1, bias=False),
                                             nn.BatchNorm2d(widths[1]))  # fmt: skip
        self.lif2, self.pool2 = lif(), layer.SeqToANNContainer(nn.MaxPool2d(2))
        self.fc1, self.lif3, self.fc2 = (
            nn.Linear(widths[1] * side * side, hidden),
            lif(),
            nn.Linear(hidden, num_classes),
        )
        self.neurons = (self.lif1, self.lif2, self.lif3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for node in self.neurons:
            node.reset()
        current = self.stem(images).unsqueeze(0).expand(self.timesteps, -1, -1, -1, -1)
        x = self.pool1(self.lif1(current))
        x = self.pool2(self.lif2(self.block(x)))
        return self.fc2(self.lif3(self.fc1(x.flatten(2))))


def train_spikingjelly(options: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Trains the convnet dense with SpikingJelly's neurons under `options` (`ndsnn train` options; the
    sparsity options are ignored), writes out/summary.json and returns the summary."""
    config = TrainConfig.from_dict({k: v for k, v in options.items() if k != "out"})
    if config.model != "convnet":
        raise ValueError(f"the SpikingJelly peer exists for the convnet only, not {config.model}")
    if config.device not in ("auto", "cpu"):
        raise ValueError("the SpikingJelly peer runs on the CPU")
    cpu_allocator.keep_freed_memory()  # the process setting ndsnn's trainer runs under
    torch.manual_seed(config.seed)
    train_full = load_dataset(config.dataset, "train", config.data_dir)
    info = train_full.info
    train = fixed_subset(train_full, config.train_samples, "train-samples")
    test = fixed_subset(load_dataset(config.dataset, "test", config.data_dir), config.test_samples, "test-samples")
    model = SpikingJellyConvNet(info.num_classes, info.in_channels, config.timesteps, info.image_size)
    optimizer = _optimizer(config, model)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    run_steps = max(1, round(config.epochs * steps_per_epoch))
    macs = _count_macs(model)
    rates: dict[str, list[float]] = {}
    spikes = _record_spike_rates(model, rates)
    started = time.perf_counter()
    step, epoch, best, record = 0, 0, 0.0, {}
    while step < run_steps:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)  # the trainer's batch order
        batches = torch.randperm(len(train), generator=generator).split(config.batch_size)
        model.train()
        totals = [0.0, 0.0, 0.0]
        for batch_index, batch in enumerate(batches[: run_steps - step]):
            images, labels = _stack(train, batch.tolist())
            if info.crop_padding or info.flip:
                seed = config.seed * 1_000_000_007 + epoch * steps_per_epoch + batch_index
                images = augment_batch(images, info.crop_padding, info.flip, torch.Generator().manual_seed(seed))
            for group in optimizer.param_groups:
                group["lr"] = _cosine(config, step, run_steps)
            logits = model(normalize_batch(images, info))
            loss = per_step_cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            totals = [totals[0] + loss.item() * len(labels),
                      totals[1] + float((logits.detach().mean(0).argmax(-1) == labels).sum()),
                      totals[2] + len(labels)]  # fmt: skip
        epoch += 1
        accuracy = _evaluate(model, test, info, 2 * config.batch_size)
        best = max(best, accuracy)
        record = {"train_loss": totals[0] / totals[2], "train_accuracy": totals[1] / totals[2],
                  "test_accuracy": accuracy}  # fmt: skip
    wall = time.perf_counter() - started
    for handle in spikes:
        handle.remove()
    flops = 6.0 * macs["total"]  # forward 2M, input and weight gradients 2M each: the trainer's dense count
    summary = {
        "model": config.model, "dataset": config.dataset, "method": "dense", "trainer": "spikingjelly",
        "target_sparsity": 0.0, "sparsity": 0.0, "test_accuracy": record.get("test_accuracy"),
        "best_test_accuracy": best, "train_accuracy": record.get("train_accuracy"), "epochs": epoch, "steps": step,
        "rounds": 1, "timesteps": config.timesteps,
        "training_cost": {"flops": flops, "dense_flops": flops, "flops_relative_to_dense": 1.0,
                          "method_decision_ops": 0.0},
        "spike_rates": {name: sum(values) / len(values) for name, values in rates.items() if values},
        "completed": True, "wall_time_s": wall, "device": "cpu", "world_size": 1,
        "versions": _versions(), "config": config.to_dict(),
    }  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", dumps(summary, indent=2) + "\n")
    return summary


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)  # fmt: skip
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _cosine(config: TrainConfig, step: int, run_steps: int) -> float:
    if config.schedule == "constant":
        return config.lr
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(1.0, step / run_steps)))


def _stack(dataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [dataset[i] for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.tensor([int(p[1]) for p in pairs])


@torch.no_grad()
def _evaluate(model: nn.Module, test, info, batch_size: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(test), batch_size):
        images, labels = _stack(test, list(range(start, min(len(test), start + batch_size))))
        correct += int((model(normalize_batch(images, info)).mean(0).argmax(-1) == labels).sum())
    model.train()
    return correct / len(test)


def _count_macs(model: nn.Module) -> dict[str, float]:
    """Dense multiply-accumulates of the training forwards, counted as the trainer counts its layers'."""
    counts = {"total": 0.0}

    def hook(layer: nn.Module, inputs, output: torch.Tensor) -> None:
        if layer.training and torch.is_grad_enabled():
            counts["total"] += float(multiply_accumulates(layer, output))

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(hook)
    return counts


def _record_spike_rates(model: nn.Module, rates: dict[str, list[float]]) -> list:
    """Mean firing rate of each LIF node over the training forwards of the last epoch."""
    handles = []
    for name in ("lif1", "lif2", "lif3"):

        def hook(node: nn.Module, inputs, output: torch.Tensor, name: str = name) -> None:
            if node.training:
                rates.setdefault(name, []).append(float(output.detach().float().mean()))
                del rates[name][:-200]

        handles.append(getattr(model, name).register_forward_hook(hook))
    return handles


def _versions() -> dict[str, str]:
    import spikingjelly

    from .. import __version__

    return {"ndsnn": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "spikingjelly": getattr(spikingjelly, "__version__", "unknown")}  # fmt: skip
