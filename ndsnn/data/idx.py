"""Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or not, with every header field checked."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

UBYTE = 0x08


class IdxFormatError(ValueError):
    """The file is not a well-formed unsigned-byte IDX file of the expected rank."""


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when its name ends in .gz; IdxFormatError for a broken gzip stream."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise IdxFormatError(f"broken gzip stream ({error or type(error).__name__})") from error


def parse_idx(data: bytes, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX payload of rank `ndim` as a uint8 array; checks magic number, dims and byte count."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{len(data)} bytes is shorter than the {header}-byte header")
    expected_magic = (UBYTE << 8) | ndim
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise IdxFormatError(f"magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) != header + count:
        raise IdxFormatError(f"{len(data) - header} data bytes for dims {dims}, expected {count}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
