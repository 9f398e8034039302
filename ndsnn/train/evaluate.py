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
from .export import load_compact, model_spec
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
    config = state["config"]
    spec = model_spec(config, dataset_info(config["dataset"]))
    model = learnable_like(models.create(**spec), state["model"])
    model.load_state_dict(state["model"])
    return model.to(device), spec, config["dataset"]


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
