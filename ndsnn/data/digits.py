"""scikit-learn's bundled 8x8 digits with a fixed stratified 80/20 train/test split; needs no files at all."""

from __future__ import annotations

import numpy as np
import torch

from .memory import InMemoryImages
from .registry import dataset_info

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _load_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as uint8 [N, 1, 8, 8] scaled from 0..16 to 0..255, and their int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("the digits data set needs scikit-learn: pip install scikit-learn") from error
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    return images, bunch.target.astype(np.int64)


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted indices of `split`: TEST_FRACTION of each class, picked by a seeded permutation, is held out for test."""
    rng = np.random.RandomState(SPLIT_SEED)
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_test = int(round(TEST_FRACTION * members.size))
        test.append(members[rng.permutation(members.size)[:n_test]])
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_digits_split(split: str) -> InMemoryImages:
    """The train or test split of the digits."""
    images, labels = _load_arrays()
    index = split_indices(labels, split)
    return InMemoryImages(torch.from_numpy(images[index]), torch.from_numpy(labels[index]), dataset_info("digits"))
