"""A trained sparse model in compact form: for every masked weight only its kept values and their flat
indices (int32), everything else (batch norm, biases, neuron parameters) as is, plus what is needed to
rebuild the model. `load_compact` returns the same model, masks included."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__, models
from ..data import DATASETS, dataset_info
from ..nn.convert import masked_modules
from ..nn.lif import learnable_like
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SPEC_KEYS = {"name", "num_classes", "in_channels", "timesteps", "image_size"}
MAX_TIMESTEPS = 4096  # a bound on what a file may ask to build


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
    """The model saved by export_compact, and the saved file's contents (spec, dataset). Everything in the
    file is checked before use (CheckpointError naming the entry): the model it names must be the one its
    data set implies, and every sparse weight's indices must be in range, increasing (no duplicates) and
    as many as its values, which must be finite."""
    saved = load_checkpoint(path, kind="compact")
    spec = checked_spec(path, saved)
    model = models.create(**spec)
    masked = {(f"{name}." if name else "") + "weight": layer for name, layer in masked_modules(model)}
    if not isinstance(saved.get("sparse"), dict) or not isinstance(saved.get("dense"), dict):
        raise CheckpointError(f"{path}: its 'sparse' and 'dense' entries must be mappings")
    state = dict(saved["dense"])
    for key, entry in saved["sparse"].items():
        if key not in masked:
            raise CheckpointError(f"{path}: sparse entry {key!r} is not a masked weight of a {spec['name']}")
        weight, mask = _sparse_weight(path, key, entry, tuple(masked[key].weight.shape))
        state[key], state[key + "_mask"] = weight, mask
    load_state(path, learnable_like(model, state), state)
    return model.to(device), saved


def checked_spec(path: str | Path, saved: dict[str, Any]) -> dict[str, Any]:
    """The model spec of a compact file, if it is one ndsnn could have written for the file's data set."""
    spec, dataset = saved.get("model"), saved.get("dataset")
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise CheckpointError(f"{path}: unknown data set {dataset!r}")
    if not isinstance(spec, dict) or set(spec) != SPEC_KEYS:
        raise CheckpointError(f"{path}: the model entry must hold exactly {', '.join(sorted(SPEC_KEYS))}")
    timesteps = spec["timesteps"]
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or not 1 <= timesteps <= MAX_TIMESTEPS:
        raise CheckpointError(f"{path}: timesteps must be an integer in [1, {MAX_TIMESTEPS}], got {timesteps!r}")
    expected = model_spec({"model": spec["name"], "timesteps": timesteps}, dataset_info(dataset))
    if spec["name"] not in models.MODELS or spec != expected:
        raise CheckpointError(f"{path}: model entry {spec!r} is not one ndsnn builds for {dataset}")
    return spec


def _sparse_weight(path, key: str, entry: Any, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A masked weight and its mask from a compact entry, after checking the entry."""
    if not isinstance(entry, dict) or set(entry) != {"shape", "indices", "values"}:
        raise CheckpointError(f"{path}: sparse entry {key!r} must hold exactly shape, indices and values")
    indices, values = entry["indices"], entry["values"]
    stored = entry["shape"]
    if not isinstance(stored, (tuple, list)) or tuple(stored) != shape:
        raise CheckpointError(f"{path}: {key} has shape {entry['shape']!r}, the model's weight {shape}")
    if not isinstance(indices, torch.Tensor) or indices.dtype not in (torch.int32, torch.int64) or indices.dim() != 1:
        raise CheckpointError(f"{path}: {key} indices must be a 1-D int32 or int64 tensor")
    if not isinstance(values, torch.Tensor) or not values.is_floating_point() or values.shape != indices.shape:
        raise CheckpointError(f"{path}: {key} values must be a floating-point tensor with one value per index")
    numel = math.prod(shape)
    indices = indices.long()
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= numel):
        raise CheckpointError(f"{path}: {key} indices must lie in [0, {numel}), got [{int(indices.min())}, "
                              f"{int(indices.max())}]")  # fmt: skip
    if indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
        raise CheckpointError(f"{path}: {key} indices must be strictly increasing (no duplicates)")
    if not bool(torch.isfinite(values).all()):
        raise CheckpointError(f"{path}: {key} holds values that are not finite")
    weight = torch.zeros(numel, dtype=values.dtype)
    weight[indices] = values
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[indices] = True
    return weight.view(shape), mask.view(shape)


def load_state(path: str | Path, module: nn.Module, state: dict[str, Any]) -> None:
    """module.load_state_dict(state), with a mismatch reported as one CheckpointError line."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise CheckpointError(f"{path} does not fit the model it names: {detail}") from None
