"""Sparsity methods, one file each; METHODS maps their names to classes."""

from .attention import AttentionGuided
from .base import SparseMethod
from .criticality import Criticality
from .lth import LTH
from .ndsnn_method import NDSNN
from .pq_index import PQIndex
from .rigl import RigL
from .set_method import SET
from .static import Static

METHODS: dict[str, type[SparseMethod]] = {
    m.name: m for m in (Static, SET, RigL, LTH, NDSNN, Criticality, PQIndex, AttentionGuided)
}

__all__ = [
    "AttentionGuided",
    "Criticality",
    "LTH",
    "METHODS",
    "NDSNN",
    "PQIndex",
    "SET",
    "RigL",
    "SparseMethod",
    "Static",
]
