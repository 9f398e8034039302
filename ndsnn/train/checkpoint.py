"""Checkpoints that are never half-written, and the random-number state a resumed run needs.

save_checkpoint writes to a temporary file in the same directory, flushes and fsyncs it, renames it over the
target (atomic on POSIX) and fsyncs the directory, so a crash at any moment leaves the previous checkpoint or
the new one, never a torn file.

load_checkpoint runs no code from the file: it unpickles with torch's weights-only loader, which admits
tensors, numbers, strings and containers only, so a checkpoint shared by somebody else is data, never a
program. A file that asks for anything else is refused with a message naming what it asked for."""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not an ndsnn training checkpoint; the message names the file."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Writes `state` (torch.save format) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would make checkpoints private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replaces `path` with `text` in one rename, so readers see the old file or the new one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | Path, kind: str = "train") -> dict[str, Any]:
    """Reads a checkpoint written by save_checkpoint; `kind` is the value its "kind" entry must have."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data "
            f"({_refused_object(error)}); ndsnn loads no file that could run code"
        ) from None
    except Exception as error:  # truncated zip, wrong format: torch raises several types
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file ({type(error).__name__}: {error})"
                              ) from None  # fmt: skip
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise CheckpointError(f"{path} is not an ndsnn {kind} file")
    return state


def _numpy_array_globals() -> list[Any]:
    """What unpickling a plain numpy uint32 array needs (format-1 checkpoints kept numpy's random state so):
    the array reconstructor, the array and dtype classes; none of them calls anything the file names."""
    multiarray = getattr(np, "_core", None) or np.core
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _refused_object(error: Exception) -> str:
    found = re.search(r"GLOBAL (\S+)", str(error))
    return f"it asks for {found.group(1)}" if found else str(error).strip().splitlines()[-1][:200]


def rng_state() -> dict[str, Any]:
    """The state of every random-number generator a training step may draw from, as tensors and plain
    values (numpy's key array as an int64 tensor), so the checkpoint loads with the weights-only loader."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian)
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), position, has_gauss, cached_gaussian))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
