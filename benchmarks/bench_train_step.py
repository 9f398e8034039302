"""One full training step of a sparse spiking VGG-16 / ResNet-19 (CIFAR size): ndsnn against dense training
and against masked dense training, measured side by side in one run.

A step is what the trainer does per batch: forward over T steps, the mean-over-T cross-entropy, backward,
SGD (momentum 0.9, weight decay 5e-4) and the sparsity method's step. NDSNN's mask update (a dense weight
gradient for the grow ranking, then drop-and-grow) is timed on its own and amortised over the update
interval (--update-interval, the trainer's default cap of 100). Variants:

  ndsnn         ndsnn's layers: batch norm + LIF fused into one op (the LIF kernel alone after the stem),
                sparse convolutions through the dispatcher ("auto": the sparse kernel where the measured
                crossover table says it wins, dense cuDNN / mkldnn on weight * mask elsewhere), NDSNN's step,
                ndsnn.nn.MaxPool2d (the baselines below pool with nn.MaxPool2d)
  ndsnn-unfused the same at the sparsest setting with batch norm and the LIF kernel run separately
  masked-dense  what sparse-training code for SNNs does today: nn.Conv2d / nn.Linear on weight * mask
                (cuDNN / mkldnn), SpikingJelly's LIFNode (a plain PyTorch loop when SpikingJelly is absent),
                the same NDSNN step
  dense         nn.Conv2d / nn.Linear (cuDNN / mkldnn) and a plain PyTorch LIF time loop, no masks
  dense-sj      nn.Conv2d / nn.Linear and SpikingJelly's LIFNode (multi-step), no masks

For every (model, T, precision) all variants and sparsities are timed in turns (common.interleaved_medians),
so the ratios come from one run; on the CPU every variant runs with kept memory (ndsnn.cpu_allocator, as
`ndsnn train` does; NDSNN_CPU_ALLOCATOR=system turns it off). Precisions: fp32 with the device's default
TF32 flags (reported), and bf16 autocast. Memory: on CUDA the peak allocated during a step; on CPU the
bytes autograd saves for backward. --profile adds a torch.profiler breakdown (convolutions, LIF, batch norm,
optimizer, ...) of the ndsnn, ndsnn-unfused and dense steps at the sparsest setting. Writes
benchmarks/results/train_step_<device>.json (and a plot).

    python benchmarks/bench_train_step.py                       # CPU: batch 8, T 4 and 8, fp32
    python benchmarks/bench_train_step.py --device cuda --profile   # batch 128, fp32 and bf16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SavedTensorBytes, environment, interleaved_medians, write_results  # noqa: E402

from ndsnn import cpu_allocator  # noqa: E402
from ndsnn.models import create  # noqa: E402
from ndsnn.models.layers import DEFAULT_LIF, per_step_cross_entropy  # noqa: E402
from ndsnn.nn import LIF, MaxPool2d, SparseLinear, SparseSpikingConv2d, batch_norm_lif_fusion  # noqa: E402
from ndsnn.ops import lif_reference  # noqa: E402
from ndsnn.sparse.methods import NDSNN  # noqa: E402

SPARSITIES = (0.0, 0.9, 0.95, 0.99)
PRECISIONS = ("fp32", "bf16")


# -- the dense baselines' layers ----------------------------------------------------------------------------
class TimeFoldedConv2d(nn.Conv2d):
    """nn.Conv2d that also takes [T, N, C, H, W] (T folded into the batch), like ndsnn's sparse conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            y = super().forward(x.flatten(0, 1))
            return y.view(*x.shape[:2], *y.shape[1:])
        return super().forward(x)


class MaskedConv2d(TimeFoldedConv2d):
    """Masked dense convolution as sparse-training code does it: cuDNN / mkldnn on weight * mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folded = x.flatten(0, 1) if x.dim() == 5 else x
        y = F.conv2d(folded, self.weight * self.weight_mask, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)  # fmt: skip
        return y.view(*x.shape[:2], *y.shape[1:]) if x.dim() == 5 else y


class MaskedLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_mask, self.bias)


class TorchLoopLIF(nn.Module):
    """The LIF of ndsnn.nn.LIF as a plain PyTorch loop over time (autograd through every step)."""

    def __init__(self, lif: LIF) -> None:
        super().__init__()
        self.options = dict(tau=lif.tau, v_threshold=lif.v_threshold, v_reset=lif.v_reset,
                            detach_reset=lif.detach_reset, surrogate=lif.surrogate)  # fmt: skip

    def forward(self, x_seq: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        # the models hand their first LIF layer one frame and the step count: expanded, as the baselines run it
        if steps is not None:
            x_seq = x_seq.expand(steps, *x_seq.shape)
        return lif_reference(x_seq, **self.options)[0]


def spikingjelly_lif(lif: LIF) -> nn.Module | None:
    """SpikingJelly's multi-step LIFNode with the same settings, reset before every call; None if absent."""
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        return None

    class ResettingLIFNode(neuron.LIFNode):
        def forward(self, x_seq: torch.Tensor, steps: int | None = None) -> torch.Tensor:
            self.reset()
            if steps is not None:  # one frame for every step, as the models' first LIF layer gets it
                x_seq = x_seq.expand(steps, *x_seq.shape)
            return super().forward(x_seq)

    options = dict(tau=float(lif.tau), v_threshold=float(lif.v_threshold), v_reset=lif.v_reset, step_mode="m")
    return ResettingLIFNode(**options, detach_reset=lif.detach_reset, surrogate_function=surrogate.ATan())


def replace_layers(model: nn.Module, masked: bool, lif_kind: str) -> nn.Module:
    """A copy of an ndsnn model with nn.Conv2d / nn.Linear (masked or not) and another LIF implementation."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SparseSpikingConv2d):
                cls = MaskedConv2d if masked else TimeFoldedConv2d
                new = cls(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                          child.dilation, child.groups, child.bias is not None, device=child.weight.device)  # fmt: skip
            elif isinstance(child, SparseLinear):
                cls = MaskedLinear if masked else nn.Linear
                new = cls(child.in_features, child.out_features, child.bias is not None, device=child.weight.device)
            elif isinstance(child, MaxPool2d):  # PyTorch's own pooling, as the baselines' code has it
                setattr(parent, name, nn.MaxPool2d(child.kernel_size, child.stride, child.padding, child.dilation,
                                                   child.return_indices, child.ceil_mode))  # fmt: skip
                continue
            elif isinstance(child, LIF):
                new = spikingjelly_lif(child) if lif_kind == "spikingjelly" else None
                new = new if new is not None else TorchLoopLIF(child)
                setattr(parent, name, new)
                continue
            else:
                continue
            with torch.no_grad():
                new.weight.copy_(child.weight)
                if child.bias is not None:
                    new.bias.copy_(child.bias)
            if masked:
                new.register_buffer("weight_mask", child.weight_mask.clone())
            setattr(parent, name, new)
    return model


# -- one variant's training step ------------------------------------------------------------------------
class StepRunner:
    """Model, optimizer and (for sparse variants) NDSNN; `step()` runs one training step on a fixed batch."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bf16: bool,
                 method: NDSNN | None = None, reapply_masks: bool = False,
                 fuse_bn_lif: bool = True) -> None:  # fmt: skip
        self.model, self.images, self.labels, self.bf16 = model, images, labels, bf16
        self.fuse_bn_lif = fuse_bn_lif
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        self.method = method
        self.masked_layers = [m for m in model.modules() if reapply_masks and hasattr(m, "weight_mask")]

    def forward_loss(self) -> torch.Tensor:
        autocast = torch.autocast(self.images.device.type, torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast, batch_norm_lif_fusion(self.fuse_bn_lif):
            logits = self.model(self.images)
            return per_step_cross_entropy(logits.float(), self.labels)

    def step(self) -> None:
        loss = self.forward_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.method is not None:
            self.method.step()
        with torch.no_grad():  # masked dense: keep pruned weights at zero, as such code does after each step
            for layer in self.masked_layers:
                layer.weight.mul_(layer.weight_mask)

    def update_step(self, interval: int) -> None:
        """A step on which NDSNN updates its masks (dense weight gradient, then drop-and-grow)."""
        method = self.method
        method.step_count = interval * (method.step_count // interval + 1) - 1
        method._set_gradient_flags()
        self.step()


def make_ndsnn_model(model_name: str, timesteps: int, sparsity: float, device: torch.device, interval: int,
                     seed: int) -> tuple[nn.Module, NDSNN | None]:  # fmt: skip
    torch.manual_seed(seed)
    model = create(model_name, 10, 3, timesteps, 32, lif=dict(DEFAULT_LIF)).to(device)
    if sparsity == 0.0:
        return model, None
    placeholder = torch.optim.SGD(model.parameters(), lr=0.0)
    method = NDSNN(model, placeholder, sparsity=sparsity, init_density=1.0 - sparsity, total_steps=10**9,
                   update_interval=interval, seed=seed)  # fmt: skip
    return model, method


def build_runners(model_name: str, timesteps: int, batch: int, device: torch.device, bf16: bool,
                  sparsities: tuple[float, ...], interval: int) -> dict[str, StepRunner]:  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
    runners: dict[str, StepRunner] = {}
    base, _ = make_ndsnn_model(model_name, timesteps, 0.0, device, interval, 0)
    runners["dense"] = StepRunner(replace_layers(base, masked=False, lif_kind="loop"), images, labels, bf16)
    runners["dense-sj"] = StepRunner(replace_layers(base, masked=False, lif_kind="spikingjelly"), images, labels, bf16)

    def ndsnn_runner(sparsity: float, fuse_bn_lif: bool) -> StepRunner:
        model, method = make_ndsnn_model(model_name, timesteps, sparsity, device, interval, 0)
        runner = StepRunner(model, images, labels, bf16, fuse_bn_lif=fuse_bn_lif)
        if method is not None:  # the method's optimizer is the runner's, as in the trainer
            method.optimizer = runner.optimizer
            runner.method = method
        return runner

    for sparsity in sparsities:
        runner = ndsnn_runner(sparsity, fuse_bn_lif=True)
        runners[f"ndsnn@{sparsity}"] = runner
        if sparsity == max(sparsities):  # the same step with batch norm and LIF as separate kernels
            runners[f"ndsnn-unfused@{sparsity}"] = ndsnn_runner(sparsity, fuse_bn_lif=False)
        if sparsity > 0:
            masked = replace_layers(runner.model, masked=True, lif_kind="spikingjelly")
            # NDSNN's mask updates cost masked dense what they cost ndsnn: measured once, on the ndsnn variant
            runners[f"masked-dense@{sparsity}"] = StepRunner(masked, images, labels, bf16, reapply_masks=True)
    return runners


def peak_memory(runner: StepRunner, device: torch.device) -> int:
    """CUDA: peak bytes allocated during a step; CPU: bytes autograd saves for backward."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    counter = SavedTensorBytes(exclude=tuple(runner.model.parameters()))
    with counter.hooks():
        loss = runner.forward_loss()
    del loss
    return counter.total


def update_overhead(runner: StepRunner, device: torch.device, interval: int, min_run_time: float) -> float:
    """Seconds a mask-update step takes beyond a plain step, per step of the update interval."""
    times = interleaved_medians(
        {"plain": runner.step, "update": lambda: runner.update_step(interval)}, device, min_run_time, min_rounds=3
    )
    return max(0.0, times["update"] - times["plain"]) / interval


# -- the profile -----------------------------------------------------------------------------------------
CATEGORIES = (  # first match wins: cuDNN's batch-norm kernels are named cudnn::bn_*, so batch norm goes first
    ("batch norm + LIF (fused)", ("ndsnn::batch_norm",)),
    ("batch norm", ("batch_norm", "bn_fw", "bn_bw", "::bn_")),
    ("sparse conv (ndsnn kernel)", ("ndsnn::sparse_conv2d",)),
    ("dense conv / linear", ("convolution", "cudnn", "mkldnn", "conv2d", "addmm", "aten::mm", "linear", "gemm")),
    ("LIF", ("ndsnn::lif", "lif")),
    ("optimizer", ("sgd", "_foreach", "optimizer")),
    ("elementwise mul (masking, LIF loops)", ("aten::mul",)),
    ("pooling", ("pool",)),
)


def profile_step(runner: StepRunner, device: torch.device) -> dict[str, float]:
    """Self time per category (ms) of one step, from torch.profiler (CUDA time on GPU, CPU time on CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    runner.step()
    with profile(activities=activities) as prof:
        runner.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    totals: dict[str, float] = {}
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for event in prof.key_averages():
        microseconds = float(getattr(event, attribute, 0.0) or 0.0)
        if microseconds <= 0:
            continue
        name = event.key.lower()
        category = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other")
        totals[category] = totals.get(category, 0.0) + microseconds / 1e3
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


# -- the run -----------------------------------------------------------------------------------------------
def measure(model_name: str, timesteps: int, precision: str, args: argparse.Namespace,
            device: torch.device) -> list[dict]:  # fmt: skip
    runners = build_runners(model_name, timesteps, args.batch, device, precision == "bf16", tuple(args.sparsities),
                            args.update_interval)  # fmt: skip
    fns: dict[str, Callable[[], None]] = {name: runner.step for name, runner in runners.items()}
    times = interleaved_medians(fns, device, args.min_run_time, min_rounds=args.min_rounds)
    rows = []
    dense_time = times["dense"]
    for name, runner in runners.items():
        variant, _, sparsity = name.partition("@")
        overhead = 0.0
        if runner.method is not None:
            overhead = update_overhead(runner, device, args.update_interval, args.min_run_time / 2)
        rows.append({
            "model": model_name, "timesteps": timesteps, "precision": precision, "variant": variant,
            "sparsity": float(sparsity) if sparsity else 0.0, "step_ms": times[name] * 1e3,
            "update_overhead_ms": overhead * 1e3, "amortised_step_ms": (times[name] + overhead) * 1e3,
            "memory_bytes": peak_memory(runner, device),
        })  # fmt: skip
    # masked dense runs NDSNN's same mask updates: give it the ndsnn variant's measured update overhead
    overheads = {r["sparsity"]: r["update_overhead_ms"] for r in rows if r["variant"] == "ndsnn"}
    for row in rows:
        if row["variant"] == "masked-dense":
            row["update_overhead_ms"] = overheads.get(row["sparsity"], 0.0)
            row["amortised_step_ms"] = row["step_ms"] + row["update_overhead_ms"]
        row["speedup_vs_dense"] = dense_time * 1e3 / row["amortised_step_ms"]
        row["memory_vs_dense"] = row["memory_bytes"] / max(1, next(r for r in rows if r["variant"] == "dense")[
            "memory_bytes"])  # fmt: skip
    # sparsity's gain alone: against ndsnn's own step with every mask full (same neurons, same fused ops)
    full = next((r["amortised_step_ms"] for r in rows if r["variant"] == "ndsnn" and r["sparsity"] == 0.0), None)
    for row in rows:
        row["speedup_vs_ndsnn_full"] = full / row["amortised_step_ms"] if full else None
    for row in rows:
        versus_full = f" {row['speedup_vs_ndsnn_full']:5.2f}x ndsnn full |" if full else ""
        print(f"{model_name:8s} T={timesteps} {precision:4s} {row['variant']:12s} sparsity {row['sparsity']:.2f}: "
              f"step {row['step_ms']:9.2f} ms + update {row['update_overhead_ms']:6.2f} ms | "
              f"{row['speedup_vs_dense']:5.2f}x dense |{versus_full} memory {row['memory_bytes'] / 2**20:8.1f} MiB "
              f"({row['memory_vs_dense']:.2f}x)", flush=True)  # fmt: skip
    if args.profile:
        sparsest = max(args.sparsities)
        for name in (f"ndsnn@{sparsest}", f"ndsnn-unfused@{sparsest}", "dense"):
            breakdown = profile_step(runners[name], device)
            rows.append({"model": model_name, "timesteps": timesteps, "precision": precision, "variant": name,
                         "profile_ms": breakdown})  # fmt: skip
            print(f"  profile {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()), flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["timesteps"], r["precision"]) for r in rows if "step_ms" in r})
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.5), squeeze=False)
    for ax, (model, steps, precision) in zip(axes[0], groups, strict=True):
        for variant in ("ndsnn", "masked-dense"):
            points = sorted((r["sparsity"], r["speedup_vs_dense"]) for r in rows if "step_ms" in r and
                            (r["model"], r["timesteps"], r["precision"], r["variant"]) == (model, steps, precision,
                                                                                             variant))  # fmt: skip
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"{model} T={steps} {precision}")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("speedup vs dense step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet19"], choices=["vgg16", "resnet19"])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch", type=int, help="images per step (default 128 on CUDA, 8 on CPU)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, help="default fp32 (CPU), fp32 bf16 (CUDA)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--update-interval", type=int, default=100, help="steps between NDSNN mask updates")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per variant")
    parser.add_argument("--min-rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="torch.profiler breakdown at the sparsest setting")
    parser.add_argument("--output", help="results file name (default train_step_<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible")
    if device.type == "cpu":
        cpu_allocator.keep_freed_memory()  # what `ndsnn train` runs under (NDSNN_CPU_ALLOCATOR=system: not)
    args.batch = args.batch or (128 if device.type == "cuda" else 8)
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    if any(not 0.0 <= s < 1.0 for s in args.sparsities):
        parser.error("--sparsities must be in [0, 1)")
    if 0.0 not in args.sparsities:
        args.sparsities = [0.0, *args.sparsities]
    name = args.output or f"train_step_{device.type}.json"
    settings = {"batch": args.batch, "image": "3x32x32", "classes": 10, "optimizer": "SGD momentum 0.9 wd 5e-4",
                "method": "NDSNN (init density = final density), ERK", "update_interval": args.update_interval,
                "sparsities": args.sparsities, "precisions": precisions, "timesteps": args.timesteps,
                "models": args.models, "lif": DEFAULT_LIF, "min_run_time": args.min_run_time,
                "memory": "CUDA: peak allocated in a step; CPU: bytes saved for backward"}  # fmt: skip
    rows: list[dict] = []
    for model_name in args.models:
        for timesteps in args.timesteps:
            for precision in precisions:
                rows += measure(model_name, timesteps, precision, args, device)
                payload = {"benchmark": "bench_train_step", "environment": environment(device),
                           "settings": settings, "results": rows}  # fmt: skip
                path = write_results(name, payload)  # after every group: a cut-short run keeps what it measured
    plot(rows, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
