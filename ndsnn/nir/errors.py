"""The errors of the NIR bridge, and the one place that imports the optional `nir` package."""

from __future__ import annotations

from types import ModuleType

from torch import nn


class UnsupportedLayerError(ValueError):
    """A layer, option or NIR node that has no faithful counterpart on the other side; the message names it."""


def unsupported(where: str, what: str, why: str) -> UnsupportedLayerError:
    """The error for the layer or node `what` at `where` (a module path or node name), saying why."""
    return UnsupportedLayerError(f"cannot convert {what} at '{where}': {why}")


def describe(module: nn.Module) -> str:
    """A layer as error messages name it: its class and the arguments that matter."""
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra and len(extra) <= 80 else type(module).__name__


def require_nir() -> ModuleType:
    """The `nir` package, or an ImportError that says how to install it."""
    try:
        import nir
    except ImportError as error:  # pragma: no cover - nir is in the peers extra
        raise ImportError("NIR export and import need the nir package: pip install nir") from error
    return nir
