"""Data sets: loading from files in their real formats, search order, corrupt-file errors, batch augmentation."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ndsnn.data import (
    DATASETS,
    DataFileError,
    DatasetInfo,
    augment_batch,
    dataset_info,
    load_dataset,
    normalize_batch,
)
from ndsnn.data import fashion_mnist as fashion_module
from ndsnn.data.digits import split_indices
from ndsnn.data.testing import (
    TINY_IMAGENET_WNIDS,
    fake_split,
    idx_bytes,
    python2_pickle,
    write_fake_cifar10,
    write_fake_cifar100,
    write_fake_fashion_mnist,
    write_fake_tiny_imagenet,
)

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_search(monkeypatch, tmp_path):
    """No $NDSNN_DATA and no system folder unless a test sets them, so results depend only on the test's files."""
    monkeypatch.delenv("NDSNN_DATA", raising=False)
    monkeypatch.setattr(fashion_module, "SYSTEM_DIRS", (str(tmp_path / "system-fashion-mnist"),))


def assert_file_error(error: pytest.ExceptionInfo, file_name: str, *dirs: Path) -> None:
    message = str(error.value)
    assert file_name in message, message
    for directory in dirs:
        assert str(directory) in message, message


# ---------------------------------------------------------------- registry


def test_datasets_and_infos():
    assert DATASETS == ("digits", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet")
    expected = {
        "digits": (10, 1, 8, 0, False),
        "fashion-mnist": (10, 1, 28, 0, False),
        "cifar10": (10, 3, 32, 4, True),
        "cifar100": (100, 3, 32, 4, True),
        "tiny-imagenet": (200, 3, 64, 4, True),
    }
    for name in DATASETS:
        info = dataset_info(name)
        assert isinstance(info, DatasetInfo) and info.name == name
        assert (info.num_classes, info.in_channels, info.image_size, info.crop_padding, info.flip) == expected[name]
        assert len(info.mean) == len(info.std) == info.in_channels
        assert all(0.0 < m < 1.0 for m in info.mean) and all(0.0 < s < 0.5 for s in info.std)


def test_unknown_name_and_bad_split():
    with pytest.raises(ValueError, match="name.*digits.*tiny-imagenet.*'mnist'"):
        dataset_info("mnist")
    with pytest.raises(ValueError, match="name.*'cifar'"):
        load_dataset("cifar", "train")
    with pytest.raises(ValueError, match="split.*train.*test.*'val'"):
        load_dataset("digits", "val")


# ---------------------------------------------------------------- digits


def test_digits_split_is_stratified_disjoint_and_fixed():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    for data in (train, test):
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (1, 8, 8)
        assert data.labels.dtype == torch.int64 and data.labels.shape == (len(data),)
        assert data.info == dataset_info("digits")
    image, label = test[3]
    assert image.shape == (1, 8, 8) and image.dtype == torch.uint8 and isinstance(label, int)
    counts = np.bincount(bunch.target)
    assert test.labels.bincount().tolist() == [round(0.2 * c) for c in counts]
    assert train.labels.bincount().tolist() == [c - round(0.2 * c) for c in counts]

    train_index, test_index = split_indices(bunch.target, "train"), split_indices(bunch.target, "test")
    assert not set(train_index) & set(test_index)
    assert sorted(set(train_index) | set(test_index)) == list(range(1797))
    scaled = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    assert torch.equal(test.images[:, 0], torch.from_numpy(scaled[test_index]))
    assert torch.equal(test.labels, torch.from_numpy(bunch.target[test_index]))
    assert int(train.images.max()) == 255

    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_digits_batches_through_a_dataloader():
    images, labels = next(iter(DataLoader(load_dataset("digits", "train"), batch_size=16)))
    assert images.shape == (16, 1, 8, 8) and images.dtype == torch.uint8 and labels.dtype == torch.int64


# ---------------------------------------------------------------- fashion-mnist


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason=f"{REAL_FASHION} absent (Debian package dataset-fashion-mnist)")
def test_fashion_mnist_real_files(monkeypatch):
    monkeypatch.setattr(fashion_module, "SYSTEM_DIRS", (str(REAL_FASHION),))
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    mean = train.images.double().mean().item() / 255
    assert mean == pytest.approx(dataset_info("fashion-mnist").mean[0], abs=1e-3)


@pytest.mark.parametrize("compressed", [True, False])
def test_fashion_mnist_fake_round_trip(tmp_path, compressed):
    data_dir = write_fake_fashion_mnist(tmp_path, 12, 5, seed=3, compressed=compressed)
    for split, n in (("train", 12), ("test", 5)):
        data = load_dataset("fashion-mnist", split, data_dir)
        images, labels = fake_split("fashion-mnist", split, n, seed=3)
        assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
        assert len(data) == n and torch.equal(data[n - 1][0], images[n - 1]) and data[n - 1][1] == labels[n - 1]


def test_fashion_mnist_data_dir_may_be_the_folder_itself(tmp_path):
    write_fake_fashion_mnist(tmp_path, 4, 3)
    data = load_dataset("fashion-mnist", "test", str(tmp_path / "fashion-mnist"))
    assert torch.equal(data.images, fake_split("fashion-mnist", "test", 3)[0])


def test_the_place_given_is_the_only_place_looked_in(tmp_path, monkeypatch):
    """--data-dir if given, else $NDSNN_DATA if set, else the system folders: never one of them completed
    from another."""
    given = write_fake_fashion_mnist(tmp_path / "given", 4, 2, seed=1)
    env = write_fake_fashion_mnist(tmp_path / "env", 5, 2, seed=2)
    system = write_fake_fashion_mnist(tmp_path / "system", 6, 2, seed=3) / "fashion-mnist"
    monkeypatch.setattr(fashion_module, "SYSTEM_DIRS", (str(system),))
    assert len(load_dataset("fashion-mnist", "train")) == 6
    monkeypatch.setenv("NDSNN_DATA", str(env))
    assert torch.equal(load_dataset("fashion-mnist", "train").images, fake_split("fashion-mnist", "train", 5, 2)[0])
    assert torch.equal(
        load_dataset("fashion-mnist", "train", given).images, fake_split("fashion-mnist", "train", 4, 1)[0]
    )
    (given / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # the test split is now incomplete there
    with pytest.raises(DataFileError) as error:
        load_dataset("fashion-mnist", "test", given)
    assert "lacks t10k-labels-idx1-ubyte.gz" in str(error.value)
    assert str(env) not in str(error.value) and str(system) not in str(error.value)


def test_fashion_mnist_missing_names_files_dirs_and_remedy(tmp_path, monkeypatch):
    given, env = tmp_path / "given", tmp_path / "env"
    monkeypatch.setenv("NDSNN_DATA", str(env))
    with pytest.raises(DataFileError) as error:
        load_dataset("fashion-mnist", "test", given)
    assert_file_error(error, "t10k-images-idx3-ubyte.gz", given, given / "fashion-mnist")
    message = str(error.value)
    assert str(env) not in message and "system-fashion-mnist" not in message
    assert "apt-get install dataset-fashion-mnist" in message and "zalandoresearch/fashion-mnist" in message
    with pytest.raises(DataFileError) as error:
        load_dataset("fashion-mnist", "test")  # no --data-dir: $NDSNN_DATA alone
    assert_file_error(error, "t10k-images-idx3-ubyte.gz", env, env / "fashion-mnist")
    monkeypatch.delenv("NDSNN_DATA")
    with pytest.raises(DataFileError) as error:
        load_dataset("fashion-mnist", "test")  # neither: the system folders
    assert_file_error(error, "t10k-images-idx3-ubyte.gz", tmp_path / "system-fashion-mnist")


def test_fashion_mnist_incomplete_folder_says_what_it_lacks(tmp_path):
    write_fake_fashion_mnist(tmp_path, 4, 3)
    (tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileError) as error:
        load_dataset("fashion-mnist", "train", tmp_path)
    assert_file_error(error, "train-labels-idx1-ubyte.gz", tmp_path / "fashion-mnist")
    assert "lacks train-labels-idx1-ubyte.gz" in str(error.value)


def _images_idx(n: int = 4, size: int = 28) -> np.ndarray:
    return np.zeros((n, size, size), dtype=np.uint8)


FASHION_CORRUPTIONS = {
    "truncated gzip": ("train-images-idx3-ubyte.gz", lambda: gzip.compress(idx_bytes(_images_idx()))[:-20]),
    "not gzip": ("train-images-idx3-ubyte.gz", lambda: b"this is not a gzip stream at all"),
    "wrong magic": (
        "train-images-idx3-ubyte.gz",
        lambda: gzip.compress(b"\x00\x00\x09\x03" + idx_bytes(_images_idx())[4:]),
    ),
    "labels as images": ("train-images-idx3-ubyte.gz", lambda: gzip.compress(idx_bytes(np.zeros(4, np.uint8)))),
    "short data": ("train-images-idx3-ubyte.gz", lambda: gzip.compress(idx_bytes(_images_idx())[:-1])),
    "extra data": ("train-images-idx3-ubyte.gz", lambda: gzip.compress(idx_bytes(_images_idx()) + b"\x00")),
    "short header": ("train-labels-idx1-ubyte.gz", lambda: gzip.compress(b"\x00\x00\x08")),
    "wrong image size": ("train-images-idx3-ubyte.gz", lambda: gzip.compress(idx_bytes(_images_idx(4, 27)))),
    "label count": ("train-labels-idx1-ubyte.gz", lambda: gzip.compress(idx_bytes(np.zeros(3, np.uint8)))),
    "label range": ("train-labels-idx1-ubyte.gz", lambda: gzip.compress(idx_bytes(np.full(4, 10, np.uint8)))),
}


@pytest.mark.parametrize("case", sorted(FASHION_CORRUPTIONS))
def test_fashion_mnist_corrupt_files(tmp_path, case):
    file_name, content = FASHION_CORRUPTIONS[case]
    write_fake_fashion_mnist(tmp_path, 4, 2)
    (tmp_path / "fashion-mnist" / file_name).write_bytes(content())
    with pytest.raises(DataFileError) as error:
        load_dataset("fashion-mnist", "train", tmp_path)
    assert_file_error(error, file_name, tmp_path / "fashion-mnist")
    assert "zalandoresearch" in str(error.value)


# ---------------------------------------------------------------- cifar


@pytest.mark.parametrize("name, folder, n_train", [("cifar10", "cifar-10-batches-py", 23), ("cifar100", None, 9)])
def test_cifar_round_trip(tmp_path, name, folder, n_train):
    writer = write_fake_cifar10 if name == "cifar10" else write_fake_cifar100
    data_dir = writer(tmp_path, n_train, 7, seed=5)
    for split, n in (("train", n_train), ("test", 7)):
        data = load_dataset(name, split, data_dir)
        images, labels = fake_split(name, split, n, seed=5)
        assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
        assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
        assert data.info.num_classes == (10 if name == "cifar10" else 100)


def test_cifar_row_layout_is_red_green_blue_planes(tmp_path):
    write_fake_cifar10(tmp_path, 5, 3)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with path.open("rb") as stream:
        row = pickle.load(stream, encoding="bytes")[b"data"][2]  # a file this test wrote: safe to load plainly
    image = load_dataset("cifar10", "test", tmp_path)[2][0]
    for channel, y, x in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 5, 7), (2, 31, 30), (2, 31, 31)]:
        assert int(image[channel, y, x]) == int(row[channel * 1024 + y * 32 + x])


def test_cifar_data_dir_may_be_the_batches_folder(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path, 10, 4)
    assert len(load_dataset("cifar10", "train", tmp_path / "cifar-10-batches-py")) == 10
    monkeypatch.setenv("NDSNN_DATA", str(tmp_path))
    assert len(load_dataset("cifar10", "test")) == 4


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_accepts_python3_pickles(tmp_path, protocol):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    (folder / "test").write_bytes(pickle.dumps({b"data": rows, b"fine_labels": [99, 0]}, protocol=protocol))
    data = load_dataset("cifar100", "test", tmp_path)
    assert torch.equal(data.images, torch.from_numpy(rows).reshape(2, 3, 32, 32)) and data.labels.tolist() == [99, 0]


def test_cifar_missing(tmp_path):
    with pytest.raises(DataFileError) as error:
        load_dataset("cifar10", "train", tmp_path)
    assert_file_error(error, "data_batch_1", tmp_path, tmp_path / "cifar-10-batches-py")
    assert "cifar-10-python.tar.gz" in str(error.value) and "https://www.cs.toronto.edu/~kriz/cifar.html" in str(
        error.value
    )
    with pytest.raises(DataFileError, match="(?s)cifar-100-python.*NDSNN_DATA"):
        load_dataset("cifar100", "test")


def _test_batch(**changes: object) -> dict[bytes, object]:
    batch: dict[bytes, object] = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 9]}
    batch.update({key.encode(): value for key, value in changes.items()})
    return batch


CIFAR_CORRUPTIONS = {
    "garbage": b"\x00\x01 not a pickle",
    "truncated": python2_pickle(_test_batch())[:-50],
    "empty": b"",
    "not a dict": python2_pickle([1, 2, 3]),
    "no data": python2_pickle({b"labels": [0]}),
    "no labels": python2_pickle({b"data": np.zeros((1, 3072), np.uint8)}),
    "int64 data": python2_pickle(_test_batch(data=np.zeros((3, 3072), np.int64))),
    "short rows": python2_pickle(_test_batch(data=np.zeros((3, 3071), np.uint8))),
    "data is a list": python2_pickle(_test_batch(data=[[0] * 3072] * 3)),
    "label count": python2_pickle(_test_batch(labels=[0, 1])),
    "label range": python2_pickle(_test_batch(labels=[0, 1, 10])),
    "negative label": python2_pickle(_test_batch(labels=[0, -1, 1])),
    "string labels": python2_pickle(_test_batch(labels=[b"a", b"b", b"c"])),
}


@pytest.mark.parametrize("case", sorted(CIFAR_CORRUPTIONS))
def test_cifar_corrupt_batches(tmp_path, case):
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar10(tmp_path, 5, 3)
    (folder / "test_batch").write_bytes(CIFAR_CORRUPTIONS[case])
    with pytest.raises(DataFileError) as error:
        load_dataset("cifar10", "test", tmp_path)
    assert_file_error(error, "test_batch", folder)
    assert "cifar-10-python.tar.gz" in str(error.value)


class _RunsCommand:
    def __init__(self, function: object, argument: str) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("function", [os.system, eval], ids=["os.system", "eval"])
def test_cifar_pickle_cannot_run_code(tmp_path, function):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar10(tmp_path, 5, 3)
    hostile = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _RunsCommand(function, command)}
    (folder / "test_batch").write_bytes(pickle.dumps(hostile, protocol=2))
    with pytest.raises(DataFileError, match="refused") as error:
        load_dataset("cifar10", "test", tmp_path)
    assert_file_error(error, "test_batch", folder)
    assert not marker.exists()


# ---------------------------------------------------------------- tiny-imagenet


def test_tiny_imagenet_round_trip(tmp_path):
    data_dir = write_fake_tiny_imagenet(tmp_path, 7, 4, seed=2)
    train = load_dataset("tiny-imagenet", "train", data_dir)
    images, labels = fake_split("tiny-imagenet", "train", 7, seed=2)
    order = torch.argsort(labels, stable=True)  # files are listed class by class, in wnids.txt order
    assert len(train) == 7 and torch.equal(train.labels, labels[order]) and train.labels.dtype == torch.int64
    for position, index in enumerate(order.tolist()):
        image, label = train[position]
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8 and label == int(labels[index])
        assert (image.int() - images[index].int()).abs().max() <= 4  # flat colours survive JPEG almost exactly

    test = load_dataset("tiny-imagenet", "test", data_dir / "tiny-imagenet-200")
    images, labels = fake_split("tiny-imagenet", "test", 4, seed=2)
    assert torch.equal(test.labels, labels) and test.info.num_classes == 200
    batch, batch_labels = next(iter(DataLoader(test, batch_size=4)))
    assert batch.shape == (4, 3, 64, 64) and torch.equal(batch_labels, labels)
    assert (batch.int() - images.int()).abs().max() <= 4


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DataFileError) as error:
        load_dataset("tiny-imagenet", "test", tmp_path)
    assert_file_error(error, "val_annotations.txt", tmp_path, tmp_path / "tiny-imagenet-200")
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in str(error.value)


def _break_annotations_wnid(folder: Path) -> str:
    (folder / "val" / "val_annotations.txt").write_text("val_000000.JPEG\tn99999999\t0\t0\t63\t63\n")
    return "val_annotations.txt"


def _break_annotations_file(folder: Path) -> str:
    (folder / "val" / "val_annotations.txt").write_text(f"val_000099.JPEG\t{TINY_IMAGENET_WNIDS[0]}\t0\t0\t9\t9\n")
    return "val_annotations.txt"


def _break_annotations_format(folder: Path) -> str:
    (folder / "val" / "val_annotations.txt").write_text("val_000000.JPEG n00000000\n")
    return "val_annotations.txt"


def _break_wnids(folder: Path) -> str:
    (folder / "wnids.txt").write_text("\n".join(TINY_IMAGENET_WNIDS[:199]))
    return "wnids.txt"


TINY_CORRUPTIONS = {
    "unknown wnid": _break_annotations_wnid,
    "missing val image": _break_annotations_file,
    "no tab": _break_annotations_format,
    "199 wnids": _break_wnids,
}


@pytest.mark.parametrize("case", sorted(TINY_CORRUPTIONS))
def test_tiny_imagenet_corrupt_listing(tmp_path, case):
    folder = write_fake_tiny_imagenet(tmp_path, 2, 2) / "tiny-imagenet-200"
    file_name = TINY_CORRUPTIONS[case](folder)
    with pytest.raises(DataFileError) as error:
        load_dataset("tiny-imagenet", "test", tmp_path)
    assert_file_error(error, file_name, folder)


def test_tiny_imagenet_missing_class_folder(tmp_path):
    folder = write_fake_tiny_imagenet(tmp_path, 2, 2) / "tiny-imagenet-200"
    (folder / "train" / TINY_IMAGENET_WNIDS[7] / "images").rmdir()
    with pytest.raises(DataFileError) as error:
        load_dataset("tiny-imagenet", "train", tmp_path)
    assert_file_error(error, str(folder / "train" / TINY_IMAGENET_WNIDS[7]))


def _wrong_size_jpeg(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 64), (10, 20, 30)).save(path, format="JPEG")


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda path: path.write_bytes(path.read_bytes()[:200]), "readable"),
        (lambda path: path.write_bytes(b"plain text, not a JPEG"), "readable"),
        (_wrong_size_jpeg, "32x64"),
    ],
    ids=["truncated", "not an image", "wrong size"],
)
def test_tiny_imagenet_bad_image_named_on_access(tmp_path, damage, problem):
    folder = write_fake_tiny_imagenet(tmp_path, 2, 3) / "tiny-imagenet-200"
    damage(folder / "val" / "images" / "val_000001.JPEG")
    data = load_dataset("tiny-imagenet", "test", tmp_path)
    data[0]  # intact images still load
    with pytest.raises(DataFileError, match=problem) as error:
        data[1]
    assert_file_error(error, "val_000001.JPEG", folder / "val" / "images")


def test_data_file_error_crosses_dataloader_workers(tmp_path):
    folder = write_fake_tiny_imagenet(tmp_path, 2, 2) / "tiny-imagenet-200"
    (folder / "val" / "images" / "val_000000.JPEG").write_bytes(b"broken")
    loader = DataLoader(load_dataset("tiny-imagenet", "test", tmp_path), batch_size=2, num_workers=1)
    with pytest.raises(DataFileError, match="val_000000.JPEG"):
        next(iter(loader))


# ---------------------------------------------------------------- augment_batch


def _images(n: int = 24, channels: int = 3, height: int = 10, width: int = 7, seed: int = 0) -> torch.Tensor:
    """Non-zero pixels, so zero padding is distinguishable from image content."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, channels, height, width), generator=generator, dtype=torch.uint8)


def _windows(image: torch.Tensor, padding: int, flip: bool) -> list[torch.Tensor]:
    """Every crop (and, with flip, mirrored crop) of one zero-padded image, by plain slicing."""
    _, height, width = image.shape
    padded = torch.nn.functional.pad(image, (padding, padding, padding, padding))
    crops = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + height, left : left + width]
            crops.append(crop)
            if flip:
                crops.append(crop.flip(-1))
    return crops


def test_augment_identity_without_padding_or_flip():
    images = _images()
    assert augment_batch(images, 0, False, torch.Generator().manual_seed(0)) is images


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("padding, flip", [(4, True), (2, False), (1, True)])
def test_augment_crops_are_windows_of_the_padded_input(dtype, padding, flip):
    images = _images().to(dtype)
    out = augment_batch(images, padding, flip, torch.Generator().manual_seed(7))
    assert out.shape == images.shape and out.dtype == dtype
    for sample, image in zip(out, images, strict=True):
        assert any(torch.equal(sample, window) for window in _windows(image, padding, flip))
    moved = sum(not torch.equal(sample, image) for sample, image in zip(out, images, strict=True))
    assert moved >= len(images) // 2  # most samples are shifted or mirrored


def test_augment_offsets_vary_per_sample_and_cover_the_range():
    images = torch.ones(400, 1, 5, 5, dtype=torch.uint8)
    out = augment_batch(images, 2, False, torch.Generator().manual_seed(1))
    # The zero rows/cols at the top and left of each crop reveal its offset: top = 2 - zero rows when shifted down.
    zero_rows = (out[:, 0].sum(dim=2) == 0).sum(dim=1)
    zero_cols = (out[:, 0].sum(dim=1) == 0).sum(dim=1)
    assert set(zero_rows.tolist()) == {0, 1, 2} and set(zero_cols.tolist()) == {0, 1, 2}


def test_augment_is_deterministic_given_the_generator():
    images = _images(64)
    first = augment_batch(images, 4, True, torch.Generator().manual_seed(11))
    second = augment_batch(images, 4, True, torch.Generator().manual_seed(11))
    other = augment_batch(images, 4, True, torch.Generator().manual_seed(12))
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_augment_flip_only_mirrors_about_half():
    images = _images(400, height=4, width=5)
    out = augment_batch(images, 0, True, torch.Generator().manual_seed(3))
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    assert bool((same | mirrored).all()) and not bool((same & mirrored).any())
    assert 150 < int(mirrored.sum()) < 250


def test_augment_rejects_bad_arguments():
    with pytest.raises(ValueError, match="images"):
        augment_batch(torch.zeros(3, 8, 8), 2, True, torch.Generator())
    with pytest.raises(ValueError, match="padding"):
        augment_batch(torch.zeros(1, 3, 8, 8), -1, True, torch.Generator())


# ---------------------------------------------------------------- normalize_batch


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar100"])
def test_normalize_batch_matches_the_formula(name):
    info = dataset_info(name)
    images = _images(5, info.in_channels, 6, 6)
    out = normalize_batch(images, info)
    assert out.dtype == torch.float32 and out.shape == images.shape
    for channel in range(info.in_channels):
        expected = (images[:, channel].double() / 255 - info.mean[channel]) / info.std[channel]
        torch.testing.assert_close(out[:, channel].double(), expected, rtol=1e-6, atol=1e-6)


def test_normalize_batch_checks_dtype_and_channels():
    with pytest.raises(TypeError, match="uint8"):
        normalize_batch(torch.zeros(2, 3, 4, 4), dataset_info("cifar10"))
    with pytest.raises(ValueError, match="cifar10"):
        normalize_batch(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), dataset_info("cifar10"))
