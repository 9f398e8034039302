"""One training epoch of the spiking convnet on the whole of Fashion-MNIST (60000 images, T = 4, batch 128,
Adam): ndsnn with no pruning, with a static 90%-sparse mask and with NDSNN to 99% sparsity (each one
`ndsnn train` process, as a user runs it), and the same network trained dense with SpikingJelly 2.0's LIFNode
(multi-step) and plain PyTorch layers, in this process. Each figure is the wall clock of the epoch plus the
evaluation on the 10000 test images; the runs take turns, one at a time.

    python benchmarks/bench_epoch.py                    # the three ndsnn runs and SpikingJelly
    python benchmarks/bench_epoch.py --runs dense ndsnn
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_results  # noqa: E402

NDSNN_RUNS = {"dense": ("static", 0.0), "static90": ("static", 0.9), "ndsnn99": ("ndsnn", 0.99)}
SETTINGS = {"dataset": "fashion-mnist", "model": "convnet", "epochs": 1, "timesteps": 4, "batch_size": 128,
            "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "seed": 0}  # fmt: skip


def ndsnn_run(name: str, work: Path) -> dict:
    method, sparsity = NDSNN_RUNS[name]
    out = work / name
    options = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    command = [sys.executable, "-m", "ndsnn", "train", *options, "--method", method, "--sparsity", str(sparsity),
               "--out", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"run": name, "trainer_wall_s": summary["wall_time_s"], "process_wall_s": time.perf_counter() - started,
            "test_accuracy": summary["test_accuracy"], "sparsity": summary["sparsity"],
            "command": " ".join(command[1:]).replace(str(out), "OUT")}  # fmt: skip


class SpikingJellyConvNet(nn.Module):
    """ndsnn's convnet (28x28: conv 32 - BN - LIF - pool - conv 64 - BN - LIF - pool - fc 128 - LIF - fc 10) with
    nn layers and SpikingJelly's multi-step LIFNode of the same settings (tau 4/3, threshold 1, hard reset to
    0, detached reset, arctangent surrogate); the stem runs once and is repeated over T, as in ndsnn."""

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        def lif():
            return neuron.LIFNode(tau=4 / 3, v_threshold=1.0, v_reset=0.0, detach_reset=True,
                                  surrogate_function=surrogate.ATan(), step_mode="m")  # fmt: skip

        self.timesteps = timesteps
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.lif1, self.pool1 = lif(), layer.SeqToANNContainer(nn.MaxPool2d(2))
        self.block = layer.SeqToANNContainer(nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64))
        self.lif2, self.pool2 = lif(), layer.SeqToANNContainer(nn.MaxPool2d(2))
        self.fc1, self.lif3, self.fc2 = nn.Linear(64 * 7 * 7, 128), lif(), nn.Linear(128, 10)
        self.neurons = (self.lif1, self.lif2, self.lif3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for node in self.neurons:
            node.reset()
        current = self.stem(images).unsqueeze(0).expand(self.timesteps, -1, -1, -1, -1)
        x = self.pool1(self.lif1(current))
        x = self.pool2(self.lif2(self.block(x)))
        return self.fc2(self.lif3(self.fc1(x.flatten(2))))


def spikingjelly_run() -> dict:
    """The same epoch and evaluation, in this process, with the same data order, augmentation (none) and
    normalisation as ndsnn's trainer."""
    from ndsnn.data import load_dataset, normalize_batch
    from ndsnn.models import per_step_cross_entropy

    torch.manual_seed(SETTINGS["seed"])
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    model = SpikingJellyConvNet(SETTINGS["timesteps"])
    optimizer = torch.optim.Adam(model.parameters(), lr=SETTINGS["lr"])
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SETTINGS["seed"] * 1_000_003))
    started = time.perf_counter()
    model.train()
    for batch in order.split(SETTINGS["batch_size"]):
        images = torch.stack([train[i][0] for i in batch.tolist()])
        labels = torch.tensor([train[i][1] for i in batch.tolist()])
        loss = per_step_cross_entropy(model(normalize_batch(images, train.info)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 2 * SETTINGS["batch_size"]):
            indices = range(start, min(len(test), start + 2 * SETTINGS["batch_size"]))
            images = torch.stack([test[i][0] for i in indices])
            labels = torch.tensor([test[i][1] for i in indices])
            correct += int((model(normalize_batch(images, test.info)).mean(0).argmax(-1) == labels).sum())
    wall = time.perf_counter() - started
    return {"run": "spikingjelly dense", "trainer_wall_s": wall, "process_wall_s": None,
            "test_accuracy": correct / len(test), "sparsity": 0.0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=[*NDSNN_RUNS, "spikingjelly"],
                        choices=[*NDSNN_RUNS, "spikingjelly"])  # fmt: skip
    parser.add_argument("--output", default="epoch_fashion_mnist_cpu.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.runs:
            row = spikingjelly_run() if name == "spikingjelly" else ndsnn_run(name, Path(work))
            rows.append(row)
            print(f"{row['run']:18s}: {row['trainer_wall_s']:7.1f} s, test accuracy {100 * row['test_accuracy']:.2f}%, "
                  f"sparsity {100 * row['sparsity']:.1f}%", flush=True)  # fmt: skip
    base = next((r["trainer_wall_s"] for r in rows if r["run"] == "dense"), None)
    for row in rows:
        row["time_vs_ndsnn_dense"] = row["trainer_wall_s"] / base if base else None
        print(f"{row['run']:18s}: {row['time_vs_ndsnn_dense']:.2f}x the time of ndsnn dense" if base else "")
    payload = {"benchmark": "bench_epoch", "environment": environment(torch.device("cpu")), "settings": SETTINGS,
               "timed": "the trainer's wall clock: one epoch of training plus the test-set evaluation",
               "results": rows}  # fmt: skip
    print(f"wrote {write_results(args.output, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
