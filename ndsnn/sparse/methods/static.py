"""static: a fixed random mask at the target density, never updated (the sparse-from-scratch control)."""

from __future__ import annotations

from .base import SparseMethod


class Static(SparseMethod):
    name = "static"

    def is_update_step(self, step: int) -> bool:
        return False
