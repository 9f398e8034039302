"""Sparsity methods, one file each; METHODS maps their names to classes."""

from .base import SparseMethod
from .ndsnn_method import NDSNN
from .rigl import RigL
from .set_method import SET
from .static import Static

METHODS: dict[str, type[SparseMethod]] = {m.name: m for m in (Static, SET, RigL, NDSNN)}

__all__ = ["METHODS", "NDSNN", "SET", "RigL", "SparseMethod", "Static"]
