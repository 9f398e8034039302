"""A trained sparse model in compact form: for every masked weight only its kept values and their flat
indices (int32), everything else (batch norm, biases, neuron parameters) as is, plus what is needed to
rebuild the model. `load_compact` returns the same model, masks included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__, models
from ..nn.convert import masked_modules
from ..nn.lif import learnable_like
from .checkpoint import load_checkpoint, save_checkpoint


def model_spec(config: dict[str, Any], info) -> dict[str, Any]:
    """The arguments of ndsnn.models.create that rebuild a run's model."""
    return {"name": config["model"], "num_classes": info.num_classes, "in_channels": info.in_channels,
            "timesteps": config["timesteps"], "image_size": info.image_size}  # fmt: skip


def compact_state(model: nn.Module, spec: dict[str, Any], dataset: str) -> dict[str, Any]:
    state = model.state_dict()
    sparse = {}
    for name, layer in masked_modules(model):
        if not isinstance(layer, nn.Module):
            continue
        prefix = f"{name}." if name else ""
        mask = layer.weight_mask.reshape(-1)
        indices = mask.nonzero().squeeze(1)
        sparse[prefix + "weight"] = {"shape": tuple(layer.weight.shape),
                                     "indices": indices.to(torch.int32).cpu(),
                                     "values": layer.weight.detach().reshape(-1)[indices].cpu()}  # fmt: skip
        state.pop(prefix + "weight")
        state.pop(prefix + "weight_mask")
    dense = {key: value.detach().cpu() for key, value in state.items()}
    return {"kind": "compact", "format": 1, "ndsnn": __version__, "model": spec, "dataset": dataset,
            "sparse": sparse, "dense": dense}  # fmt: skip


def export_compact(model: nn.Module, spec: dict[str, Any], dataset: str, path: str | Path) -> Path:
    """Writes the compact form of `model` (atomically); returns the path."""
    save_checkpoint(compact_state(model, spec, dataset), path)
    return Path(path)


def load_compact(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model saved by export_compact, and the saved file's contents (spec, dataset)."""
    saved = load_checkpoint(path, kind="compact")
    model = models.create(**saved["model"])
    state = dict(saved["dense"])
    for key, entry in saved["sparse"].items():
        numel = 1
        for size in entry["shape"]:
            numel *= size
        indices = entry["indices"].long()
        weight = torch.zeros(numel, dtype=entry["values"].dtype)
        weight[indices] = entry["values"]
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[indices] = True
        state[key] = weight.view(entry["shape"])
        state[key + "_mask"] = mask.view(entry["shape"])
    learnable_like(model, state).load_state_dict(state)
    return model.to(device), saved
