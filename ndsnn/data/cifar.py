"""CIFAR-10 and CIFAR-100 from their python pickle batches, unpickled without the ability to run code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import corrupt_file
from .locate import candidate_dirs, locate
from .memory import InMemoryImages
from .registry import dataset_info
from .safe_pickle import loads_numpy_only

ROW_BYTES = 3 * 32 * 32
_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which key holds the labels."""

    name: str
    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: bytes
    archive: str

    @property
    def how_to_get(self) -> str:
        return f"To get it: download {self.archive} from {_URL} and extract it in --data-dir (or $NDSNN_DATA)."


LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar10",
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        b"labels",
        "cifar-10-python.tar.gz",
    ),
    "cifar100": CifarLayout(
        "cifar100",
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        b"fine_labels",
        "cifar-100-python.tar.gz",
    ),
}


def _read_batch(layout: CifarLayout, path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as uint8 [n, 3072] rows and int64 labels, every field checked."""

    def bad(problem: str) -> Exception:
        return corrupt_file(layout.name, path, problem, layout.how_to_get)

    try:
        batch = loads_numpy_only(path.read_bytes())
    except Exception as error:  # a corrupt or hostile pickle can fail in many ways; all mean "unusable file"
        raise bad(f"not a readable CIFAR pickle ({type(error).__name__}: {error})") from error
    if not isinstance(batch, dict):
        raise bad(f"holds a {type(batch).__name__}, expected a dict")
    for key in (b"data", layout.label_key):
        if key not in batch:
            raise bad(f"has no {key!r} entry (keys: {sorted(map(repr, batch))})")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad(f"b'data' is {described}, expected uint8 [n, {ROW_BYTES}]")
    try:
        labels = np.asarray(batch[layout.label_key])
    except Exception as error:
        raise bad(f"{layout.label_key!r} is not a list of integers") from error
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise bad(f"{layout.label_key!r} is not a flat list of integers")
    if labels.size != data.shape[0]:
        raise bad(f"{labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise bad(f"labels outside 0..{num_classes - 1}")
    return data, labels.astype(np.int64)


def load_cifar(name: str, split: str, data_dir: str | os.PathLike | None = None) -> InMemoryImages:
    """CIFAR-10 or CIFAR-100 ('cifar10' / 'cifar100') as uint8 [N, 3, 32, 32] images with int64 labels."""
    layout = LAYOUTS[name]
    info = dataset_info(name)
    dirs = candidate_dirs(data_dir, [layout.folder])
    found = locate(name, dirs, [(file,) for file in layout.files[split]], layout.how_to_get)
    batches = [_read_batch(layout, path, info.num_classes) for path in found.files]
    rows = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([batch_labels for _, batch_labels in batches])
    # A 3072-byte row is the red, then green, then blue plane, each 32x32 row-major.
    images = torch.from_numpy(rows.reshape(-1, 3, 32, 32))
    return InMemoryImages(images, torch.from_numpy(labels), info)
