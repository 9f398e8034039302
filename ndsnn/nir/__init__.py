"""NIR (Neuromorphic Intermediate Representation) export and import of ndsnn's spiking networks.

    graph = ndsnn.nir.to_nir(model, input_shape=(1, 28, 28))     # nir.NIRGraph, batch norm folded
    ndsnn.nir.export_nir(model, "model.nir", (1, 28, 28))        # written with nir.write; density reported
    net = ndsnn.nir.from_nir("model.nir")                        # SpikingGraph of ndsnn modules
    logits = net(images)                                          # [T, N, classes], T from the file

Needs the `nir` package. The LIF mapping and its limits are in lif_mapping and docs/nir.md."""

from .errors import UnsupportedLayerError
from .export import ExportReport, export_nir, frame_shapes, to_nir, weight_counts, write_nir
from .fold import fold
from .graph import SpikingGraph
from .lif_mapping import DEFAULT_DT, lif_to_nir, nir_to_lif
from .load import from_nir
from .lower import lower
from .modules import Fire, FrameFlatten, SumPool2d

__all__ = [
    "DEFAULT_DT",
    "ExportReport",
    "Fire",
    "FrameFlatten",
    "SpikingGraph",
    "SumPool2d",
    "UnsupportedLayerError",
    "export_nir",
    "fold",
    "frame_shapes",
    "from_nir",
    "lif_to_nir",
    "lower",
    "nir_to_lif",
    "to_nir",
    "weight_counts",
    "write_nir",
]
