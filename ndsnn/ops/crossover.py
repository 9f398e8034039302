"""Where the sparse kernels start to beat the dense ones: crossover densities measured per device kind.

benchmarks/bench_sparse_conv.py --suite times every conv layer shape of VGG-16 and ResNet-19 at many
sparsities, with spike and real inputs, and records for each the densest mask at which the sparse kernel is
not slower than the dense convolution (forward + backward). Those records ship with the package
(sparse_crossover.json beside this file). For a new layer the dispatcher uses the record of the most similar
measured shape. Overrides: NDSNN_CROSSOVER_FILE (a table written by the benchmark on your machine) or
NDSNN_SPARSE_CONV_MAX_DENSITY (one density for every layer). A device kind with no records runs dense.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import settings

TABLE_FILE = Path(__file__).with_name("sparse_crossover.json")
TABLE_FORMAT = 1


@dataclass(frozen=True)
class CrossoverRecord:
    """One measured layer: the densest mask at which the sparse kernel was not slower than dense."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    size: int  # input height (= width in the benchmark)
    batch: int
    spike_input: bool
    max_density: float
    layer: str = ""  # the measured layer's name, for people reading the table

    def distance(self, other: CrossoverRecord) -> float:
        """Dissimilarity of two layer shapes: log-scale channels, size and batch; kernel and stride exactly."""
        logs = (
            (self.in_channels, other.in_channels, 1.0),
            (self.out_channels, other.out_channels, 1.0),
            (self.size, other.size, 2.0),
            (self.batch, other.batch, 0.5),
        )
        total = sum(weight * abs(math.log2(a) - math.log2(b)) for a, b, weight in logs)
        return total + 4.0 * abs(self.kernel - other.kernel) + 4.0 * abs(self.stride - other.stride)


@functools.cache
def load_table(path: Path) -> dict[str, tuple[CrossoverRecord, ...]]:
    """The records of a crossover file, by device type; a clear error if it is missing or malformed."""
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") != TABLE_FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, expected {TABLE_FORMAT}")
        return {
            device: tuple(CrossoverRecord(**record) for record in records)
            for device, records in payload["devices"].items()
        }
    except FileNotFoundError:
        raise settings.SettingsError(
            f"NDSNN_CROSSOVER_FILE: crossover table {path} not found; write one with `python "
            "benchmarks/bench_sparse_conv.py --suite --write-crossover` or unset NDSNN_CROSSOVER_FILE"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise settings.SettingsError(f"NDSNN_CROSSOVER_FILE: crossover table {path} is not a valid table: {error}"
                                     ) from None  # fmt: skip


def max_sparse_density(
    device: torch.device,
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    stride: tuple[int, int],
    spike_input: bool,
) -> float:
    """The densest mask for which the sparse kernel is expected not to be slower than dense here."""
    override = settings.max_density_override()
    path = str(settings.crossover_file(TABLE_FILE))
    return _lookup(device.type, tuple(x_shape), tuple(weight_shape), tuple(stride), spike_input, path, override)


@functools.lru_cache(maxsize=4096)
def _lookup(device_type, x_shape, weight_shape, stride, spike_input, path, override) -> float:
    if override is not None:
        return override
    records = [r for r in load_table(Path(path)).get(device_type, ()) if r.spike_input == spike_input]
    if not records:
        return 0.0
    layer = CrossoverRecord(
        in_channels=max(1, x_shape[1]),
        out_channels=max(1, weight_shape[0]),
        kernel=weight_shape[2],
        stride=stride[0],
        size=max(1, x_shape[2]),
        batch=max(1, x_shape[0]),
        spike_input=spike_input,
        max_density=0.0,
    )
    return min(records, key=layer.distance).max_density


def check_settings() -> None:
    """Raises SettingsError now if NDSNN_SPARSE_CONV_MAX_DENSITY or NDSNN_CROSSOVER_FILE is unusable."""
    if settings.max_density_override() is None:
        load_table(settings.crossover_file(TABLE_FILE))


def clear_cache() -> None:
    """Forget loaded tables and lookups (after a benchmark rewrote the table)."""
    load_table.cache_clear()
    _lookup.cache_clear()
