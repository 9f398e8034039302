"""static: a fixed mask at the target density, never updated (the sparse-from-scratch control); random, or
by magnitude of the initial weights with mask_init="magnitude"."""

from __future__ import annotations

from .base import SparseMethod


class Static(SparseMethod):
    name = "static"

    def is_update_step(self, step: int) -> bool:
        return False
