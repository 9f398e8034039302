"""Reproducing the comparisons: a sweep of methods x sparsities x seeds on Fashion-MNIST (`ndsnn reproduce
fashion-mnist`), its table, claims and plots."""

from .aggregate import claims, markdown, table_rows
from .budgets import BUDGETS, Budget, sweep_methods
from .sweep import RunSpec, grid, run_sweep

__all__ = ["BUDGETS", "Budget", "RunSpec", "claims", "grid", "markdown", "run_sweep", "sweep_methods", "table_rows"]
