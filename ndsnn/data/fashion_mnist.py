"""Fashion-MNIST from its four IDX files (gzip-compressed or not), found via locate's search order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import corrupt_file
from .idx import IdxFormatError, parse_idx, read_bytes
from .locate import candidate_dirs, locate
from .memory import InMemoryImages
from .registry import dataset_info

NAME = "fashion-mnist"
SUBFOLDER = "fashion-mnist"
# Debian's package dataset-fashion-mnist installs the files here.
SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "To get them: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or put the four "
    "IDX gz files from https://github.com/zalandoresearch/fashion-mnist in --data-dir (or $NDSNN_DATA)."
)


def _read(path: Path, ndim: int) -> np.ndarray:
    try:
        return parse_idx(read_bytes(path), ndim)
    except (IdxFormatError, OSError) as error:
        raise corrupt_file(NAME, path, str(error), HOW_TO_GET) from error


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> InMemoryImages:
    """The train (60000) or test (10000) split as uint8 [N, 1, 28, 28] images with int64 labels."""
    info = dataset_info(NAME)
    names = FILES[split]
    dirs = candidate_dirs(data_dir, [SUBFOLDER], SYSTEM_DIRS)
    found = locate(NAME, dirs, [(f"{name}.gz", name) for name in names], HOW_TO_GET)
    image_path, label_path = found.files
    images = _read(image_path, 3)
    labels = _read(label_path, 1)
    size = info.image_size
    if images.shape[1:] != (size, size):
        raise corrupt_file(NAME, image_path, f"images are {images.shape[1:]}, expected ({size}, {size})", HOW_TO_GET)
    if labels.shape[0] != images.shape[0]:
        raise corrupt_file(
            NAME, label_path, f"{labels.shape[0]} labels for {images.shape[0]} images in {image_path.name}", HOW_TO_GET
        )
    if labels.size and int(labels.max()) >= info.num_classes:
        raise corrupt_file(
            NAME, label_path, f"label {int(labels.max())} out of range 0..{info.num_classes - 1}", HOW_TO_GET
        )
    return InMemoryImages(torch.from_numpy(images[:, None]), torch.from_numpy(labels.astype(np.int64)), info)
