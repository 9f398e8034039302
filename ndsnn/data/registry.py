"""The data sets this library knows: their names and the facts a model and a trainer need about each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Shape, classes, normalisation constants and training augmentation of one data set.

    mean and std are per channel, of the training images scaled to [0, 1].
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool


_INFOS = (
    # Computed from this library's fixed training split of scikit-learn's digits (scaled to 0..255).
    DatasetInfo("digits", 10, 1, 8, (0.3058,), (0.3764,), crop_padding=0, flip=False),
    DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=0, flip=False),
    DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4, flip=True),
    DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4, flip=True),
    DatasetInfo(
        "tiny-imagenet", 200, 3, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), crop_padding=4, flip=True
    ),
)

DATASETS: tuple[str, ...] = tuple(info.name for info in _INFOS)
_BY_NAME = {info.name: info for info in _INFOS}


def dataset_info(name: str) -> DatasetInfo:
    """The facts about data set `name`; ValueError listing the choices for an unknown one."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"name must be one of {', '.join(DATASETS)}; got {name!r}") from None
