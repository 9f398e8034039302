"""Writers of tiny files in each data set's real on-disk format, for tests and examples.

Each write_fake_* takes (root, n_train, n_test, seed) and returns the directory to pass as data_dir. The content
is fake_split(name, split, n, seed): random pixels (flat colours for tiny-imagenet, whose JPEGs are lossy) and
random labels, with the train split drawn from `seed` and the test split from `seed + 1`.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from .registry import dataset_info

TINY_IMAGENET_WNIDS = tuple(f"n{index:08d}" for index in range(200))


def fake_split(name: str, split: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 images [n, C, H, W] and int64 labels that the writers store for `split` of data set `name`."""
    info = dataset_info(name)
    rng = np.random.default_rng(seed + (1 if split == "test" else 0))
    labels = rng.integers(0, info.num_classes, size=n, dtype=np.int64)
    shape = (n, info.in_channels, info.image_size, info.image_size)
    if name == "tiny-imagenet":
        colours = rng.integers(0, 256, size=(n, info.in_channels, 1, 1), dtype=np.uint8)
        images = np.broadcast_to(colours, shape).copy()
    else:
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels)


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte array in IDX format: magic 0x0000 08 <rank>, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fake_fashion_mnist(root: Path, n_train: int, n_test: int, seed: int = 0, *, compressed: bool = True) -> Path:
    """The four IDX files (gzip-compressed unless compressed=False) in root/fashion-mnist; returns root."""
    folder = Path(root) / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images, labels = fake_split("fashion-mnist", split, n, seed)
        for kind, array in (("images-idx3", images.numpy()[:, 0]), ("labels-idx1", labels.numpy().astype(np.uint8))):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if compressed:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return Path(root)


class _Python2StylePickler(pickle._Pickler):
    """Pickles str and bytes as Python 2 byte strings, the way the published CIFAR files were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_byte_string(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_byte_string
    dispatch[str] = _save_byte_string


def python2_pickle(obj: object) -> bytes:
    """`obj` pickled at protocol 2 like Python 2 with numpy 1 did (byte strings, numpy.core module names)."""
    stream = io.BytesIO()
    _Python2StylePickler(stream, protocol=2).dump(obj)
    return stream.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")


def _cifar_batch(name: str, split: str, n: int, seed: int, part: slice, label_key: bytes) -> dict[bytes, object]:
    images, labels = fake_split(name, split, n, seed)
    rows = images[part].reshape(-1, 3 * 32 * 32).numpy()
    batch: dict[bytes, object] = {b"batch_label": f"fake {split} batch".encode(), b"data": rows}
    batch[label_key] = labels[part].tolist()
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in labels[part].tolist()]
    batch[b"filenames"] = [f"image_{i}.png".encode() for i in range(rows.shape[0])]
    return batch


def write_fake_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """cifar-10-batches-py/ with data_batch_1..5 (train split over five batches) and test_batch; returns root."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_train, 6).round().astype(int)
    for i in range(5):
        part = slice(bounds[i], bounds[i + 1])
        batch = _cifar_batch("cifar10", "train", n_train, seed, part, b"labels")
        (folder / f"data_batch_{i + 1}").write_bytes(python2_pickle(batch))
    batch = _cifar_batch("cifar10", "test", n_test, seed, slice(None), b"labels")
    (folder / "test_batch").write_bytes(python2_pickle(batch))
    return Path(root)


def write_fake_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """cifar-100-python/ with train and test pickles (fine and coarse labels); returns root."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        batch = _cifar_batch("cifar100", split, n, seed, slice(None), b"fine_labels")
        (folder / split).write_bytes(python2_pickle(batch))
    return Path(root)


def _save_jpeg(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, format="JPEG", quality=95)


def write_fake_tiny_imagenet(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*.JPEG, val/images and val_annotations.txt.

    Needs Pillow. Returns root.
    """
    folder = Path(root) / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in TINY_IMAGENET_WNIDS))
    for wnid in TINY_IMAGENET_WNIDS:
        (folder / "train" / wnid / "images").mkdir(parents=True, exist_ok=True)
    images, labels = fake_split("tiny-imagenet", "train", n_train, seed)
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        wnid = TINY_IMAGENET_WNIDS[label]
        # Zero-padded index: sorted file order is the order written, within each class.
        _save_jpeg(image, folder / "train" / wnid / "images" / f"{wnid}_{index:06d}.JPEG")
    val_images = folder / "val" / "images"
    val_images.mkdir(parents=True, exist_ok=True)
    images, labels = fake_split("tiny-imagenet", "test", n_test, seed)
    lines = []
    for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        name = f"val_{index:06d}.JPEG"
        _save_jpeg(image, val_images / name)
        lines.append(f"{name}\t{TINY_IMAGENET_WNIDS[label]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return Path(root)
