"""Test accuracy of a saved model: a training checkpoint or a compact export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models
from ..data import dataset_info, load_dataset, normalize_batch
from ..nn.convert import masked_modules
from ..nn.lif import learnable_like
from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, TrainConfig
from .export import load_compact, load_state, model_spec
from .trainer import overall_density, resolve_device, test_totals


def load_model(path: str | Path, device: torch.device) -> tuple[nn.Module, dict[str, Any], str]:
    """The model in a training checkpoint or a compact file, the arguments that rebuild it, its dataset."""
    try:
        model, saved = load_compact(path, device)
        return model, saved["model"], saved["dataset"]
    except CheckpointError as error:
        if "not an ndsnn compact file" not in str(error):
            raise
    state = load_checkpoint(path, kind="train")
    config = checked_config(path, state)
    spec = model_spec(config.to_dict(), dataset_info(config.dataset))
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: its 'model' entry must be a state dict")
    model = learnable_like(models.create(**spec), weights)
    load_state(path, model, weights)
    return model.to(device), spec, config.dataset


def checked_config(path: str | Path, state: dict[str, Any]) -> TrainConfig:
    """The options a training checkpoint was written with, validated like the command line's."""
    values = state.get("config")
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: it holds no run options (a 'config' mapping)")
    try:
        return TrainConfig.from_dict(values, source=str(path))
    except ConfigError as error:
        raise CheckpointError(f"{path} holds options ndsnn cannot use: {error}") from None


@torch.no_grad()
def evaluate_file(path: str | Path, data_dir: str | None = None, device: str = "auto",
                  batch_size: int = 256) -> dict[str, Any]:  # fmt: skip
    """Loss and accuracy on the test split, and the model's sparsity."""
    target = resolve_device(device)
    model, _, dataset = load_model(path, target)
    model.eval()
    test_set = load_dataset(dataset, "test", data_dir)
    loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size)
    to_inputs = lambda images: normalize_batch(images.to(target), test_set.info)  # noqa: E731
    loss_sum, correct, count = test_totals(model, loader, to_inputs, target)
    sparsity = 1.0 - overall_density(layer for _, layer in masked_modules(model))
    return {"checkpoint": str(path), "dataset": dataset, "test_accuracy": correct / max(1.0, count),
            "test_loss": loss_sum / max(1.0, count), "samples": int(count), "sparsity": sparsity}  # fmt: skip
