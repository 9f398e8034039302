"""Measures, on a checkpoint's test set, how the NIR export agrees with the trained model: ndsnn's model
against the graph read back from the written NIR file (batch norm folded), and that graph against the same
file run by snnTorch. Prints JSON.

    python -m ndsnn.nir.measure --checkpoint runs/.../checkpoint.pt [--samples 1000] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..data import load_dataset, normalize_batch
from ..nn import LIF
from ..train import load_model
from .export import export_nir
from .lif_mapping import DEFAULT_DT
from .load import from_nir
from .snntorch_check import Agreement, import_into_snntorch, outputs_and_margins, run_snntorch, static_frames


def _neuron_outputs(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's output and the spikes of each of its LIF layers, by graph node name (path, dots as _)."""
    recorded: dict[str, torch.Tensor] = {}

    def keep(key: str):
        return lambda _module, _inputs, out: recorded.__setitem__(key, out)

    hooks = [m.register_forward_hook(keep(name.replace(".", "_"))) for name, m in model.named_modules()
             if isinstance(m, LIF)]  # fmt: skip
    try:
        output = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return output, recorded


@torch.no_grad()
def measure(checkpoint: str | Path, samples: int | None = None, data_dir: str | None = None, batch_size: int = 200,
            dt: float = DEFAULT_DT) -> dict[str, Any]:  # fmt: skip
    """Agreement of model vs NIR-imported ndsnn graph, and of that graph vs snnTorch, plus their accuracies."""
    model, spec, dataset = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    frame = (spec["in_channels"], spec["image_size"], spec["image_size"])
    with tempfile.TemporaryDirectory() as folder:
        report = export_nir(model, Path(folder) / "model.nir", frame, dt=dt, timesteps=spec["timesteps"])
        import nir

        nir_graph = nir.read(report.path)
    graph = from_nir(nir_graph)
    snn_module = import_into_snntorch(nir_graph)
    test_set = load_dataset(dataset, "test", data_dir)
    count = len(test_set) if samples is None else min(samples, len(test_set))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test_set, range(count)), batch_size=batch_size)
    folded, snntorch_run = Agreement(), Agreement()
    correct = {"ndsnn model": 0, "ndsnn from NIR": 0, "snnTorch from NIR": 0}
    for images, labels in loader:
        x = normalize_batch(images, test_set.info)
        model_out, model_spikes = _neuron_outputs(model, x)
        values, margins = outputs_and_margins(graph, x)
        snn_out, snn_spikes = run_snntorch(snn_module, static_frames(x, graph, None))
        folded.update(values, model_spikes, values["output"], model_out, graph.order, margins)
        snntorch_run.update(values, snn_spikes, values["output"], snn_out, graph.order, margins)
        for key, out in zip(correct, (model_out, values["output"], snn_out), strict=True):
            correct[key] += int((out.sum(0).argmax(-1) == labels).sum())
    return {"checkpoint": str(checkpoint), "dataset": dataset, "model": spec["name"], "timesteps": spec["timesteps"],
            "samples": count, "density": report.density, "dt": dt,
            "accuracy": {key: value / max(1, count) for key, value in correct.items()},
            "nir_in_ndsnn_vs_model": folded.to_dict(), "nir_in_ndsnn_vs_snntorch": snntorch_run.to_dict()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ndsnn.nir.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--samples", type=int, default=None, help="first N test samples (default all)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dt", type=float, default=DEFAULT_DT)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.checkpoint, args.samples, args.data_dir, dt=args.dt), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
