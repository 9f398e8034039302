"""Modules: spiking neurons (and, later, the drop-in sparse layers)."""

from .lif import LIF

__all__ = ["LIF"]
