"""Tiny ImageNet (200 classes, 64x64): file lists and labels read at construction, JPEGs decoded per item.

Decoding in __getitem__ lets DataLoader workers share the work. The "test" split is the labelled val folder,
since the official test labels are not public.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataFileError, corrupt_file
from .locate import candidate_dirs, locate
from .registry import DatasetInfo, dataset_info

NAME = "tiny-imagenet"
FOLDER = "tiny-imagenet-200"
IMAGE_SUFFIXES = (".jpeg", ".jpg")
HOW_TO_GET = (
    "To get it: download http://cs231n.stanford.edu/tiny-imagenet-200.zip and extract it in --data-dir "
    "(or $NDSNN_DATA)."
)


def _pil_image():
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("tiny-imagenet needs Pillow to decode its JPEGs: pip install pillow") from error
    return Image


def _read_wnids(path: Path, num_classes: int) -> list[str]:
    try:
        wnids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise corrupt_file(NAME, path, f"unreadable ({error})", HOW_TO_GET) from error
    if len(wnids) != num_classes or len(set(wnids)) != num_classes:
        raise corrupt_file(
            NAME, path, f"{len(wnids)} lines ({len(set(wnids))} distinct), expected {num_classes} class ids", HOW_TO_GET
        )
    return wnids


def _image_files(folder: Path) -> list[Path]:
    """The JPEG files directly in `folder`, sorted by name."""
    if not folder.is_dir():
        raise DataFileError(f"{NAME}: folder {folder} is missing. {HOW_TO_GET}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _train_items(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        found = _image_files(root / "train" / wnid / "images")
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels


def _val_items(root: Path, annotations: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    image_dir = root / "val" / "images"
    present = {p.name for p in _image_files(image_dir)}
    try:
        lines = annotations.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise corrupt_file(NAME, annotations, f"unreadable ({error})", HOW_TO_GET) from error
    by_name: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise corrupt_file(NAME, annotations, f"line {number} has no tab-separated class id", HOW_TO_GET)
        filename, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in label_of:
            raise corrupt_file(NAME, annotations, f"line {number}: class id {wnid!r} is not in wnids.txt", HOW_TO_GET)
        if filename not in present:
            raise corrupt_file(NAME, annotations, f"line {number}: {image_dir / filename} does not exist", HOW_TO_GET)
        if filename in by_name:
            raise corrupt_file(NAME, annotations, f"line {number}: {filename} is listed twice", HOW_TO_GET)
        by_name[filename] = label_of[wnid]
    names = sorted(by_name)
    return [image_dir / name for name in names], [by_name[name] for name in names]


class TinyImageNet(Dataset):
    """Items are (uint8 image [3, 64, 64], int label); `labels` holds every label without decoding any image."""

    def __init__(self, split: str, data_dir: str | os.PathLike | None = None) -> None:
        _pil_image()  # fail now, not in a worker, if Pillow is missing
        self.info: DatasetInfo = dataset_info(NAME)
        required = [("wnids.txt",), ("train",) if split == "train" else ("val/val_annotations.txt",)]
        found = locate(NAME, candidate_dirs(data_dir, [FOLDER]), required, HOW_TO_GET)
        wnids = _read_wnids(found.files[0], self.info.num_classes)
        if split == "train":
            files, labels = _train_items(found.directory, wnids)
        else:
            files, labels = _val_items(found.directory, found.files[1], wnids)
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.decode(self.files[index]), int(self.labels[index])

    def decode(self, path: Path) -> torch.Tensor:
        """One JPEG as uint8 [3, H, W]; DataFileError naming the file when it is unreadable or not 64x64."""
        image_module = _pil_image()
        size = self.info.image_size
        try:
            with image_module.open(path) as image:
                if image.size != (size, size):
                    raise corrupt_file(
                        NAME, path, f"image is {image.size[0]}x{image.size[1]}, expected {size}x{size}", HOW_TO_GET
                    )
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as error:
            raise corrupt_file(NAME, path, f"not a readable image ({error})", HOW_TO_GET) from error
        return torch.from_numpy(array.transpose(2, 0, 1).copy())
