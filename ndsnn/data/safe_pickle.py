"""Unpickling that can only rebuild numpy arrays, so a crafted data file cannot run code."""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from collections.abc import Callable


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a class or function outside the allow-list."""


def _numpy_attr(module_names: tuple[str, ...], name: str) -> Callable[[], object]:
    """A lazy lookup of `name` in the first importable module (numpy 2 renamed numpy.core to numpy._core)."""

    def resolve() -> object:
        for module_name in module_names:
            try:
                return getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError):
                continue
        raise RefusedGlobal(f"{module_names[0]}.{name} is not available in this numpy")

    return resolve


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What a Python 3 protocol-2 pickle calls to rebuild bytes; only the latin-1 codec it uses is allowed."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise RefusedGlobal(f"_codecs.encode with codec {encoding!r} is not allowed")
    return text.encode("latin1")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_ALLOWED: dict[tuple[str, str], Callable[[], object]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_attr(_MULTIARRAY, "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): _numpy_attr(_NUMERIC, "_frombuffer"),
    ("numpy", "ndarray"): _numpy_attr(("numpy",), "ndarray"),
    ("numpy", "dtype"): _numpy_attr(("numpy",), "dtype"),
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class resolves only the numpy array machinery; anything else is refused."""

    def find_class(self, module: str, name: str) -> object:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise RefusedGlobal(f"refused to load {module}.{name}: only numpy arrays are allowed in a data file")
        return resolve()


def loads_numpy_only(data: bytes) -> object:
    """Unpickle `data` (Python 2 strings become bytes) allowing nothing but numpy arrays, dtypes and builtins."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
