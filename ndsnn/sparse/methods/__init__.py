"""Sparsity methods, one file each; METHODS maps their names to classes."""

from .base import SparseMethod
from .lth import LTH
from .ndsnn_method import NDSNN
from .rigl import RigL
from .set_method import SET
from .static import Static

METHODS: dict[str, type[SparseMethod]] = {m.name: m for m in (Static, SET, RigL, LTH, NDSNN)}

__all__ = ["LTH", "METHODS", "NDSNN", "SET", "RigL", "SparseMethod", "Static"]
