"""load_dataset: one entry point that picks the loader for a data set name and checks the split."""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from .cifar import load_cifar
from .digits import load_digits_split
from .fashion_mnist import load_fashion_mnist
from .registry import dataset_info
from .tiny_imagenet import TinyImageNet

SPLITS = ("train", "test")


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """The `split` ("train" or "test") of data set `name`; items are (uint8 image [C, H, W], int label).

    The result also has `info` (its DatasetInfo) and `labels` (int64, every label). Files are looked for in
    data_dir if given, else $NDSNN_DATA if set, else system folders (never a mix); DataFileError says what is
    missing or broken and how to get it.
    """
    dataset_info(name)  # ValueError for an unknown name
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if name == "digits":
        return load_digits_split(split)
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, split, data_dir)
    return TinyImageNet(split, data_dir)
