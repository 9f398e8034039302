"""The parts of the trainer on their own: cost accounting against hand-computed formulas, atomic
checkpoints, configuration files and validation, the metrics log, and the compact export."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ndsnn import models
from ndsnn.nn import SparseLinear, SparseSpikingConv2d
from ndsnn.train import CheckpointError, ConfigError, TrainConfig, load_checkpoint, load_config_file, save_checkpoint
from ndsnn.train.cost import TrainingCost
from ndsnn.train.export import compact_state, export_compact, load_compact
from ndsnn.train.metrics import MetricsLog


def _binary_input(shape, rate: float) -> torch.Tensor:
    x = torch.zeros(shape).flatten()
    x[: round(rate * x.numel())] = 1.0
    return x[torch.randperm(x.numel())].view(shape)


def test_conv_cost_matches_the_formula():
    conv = SparseSpikingConv2d(4, 6, 3, padding=1, bias=False)
    mask = torch.rand(conv.weight.shape) < 0.3
    conv.set_mask(mask)
    density = mask.float().mean().item()
    cost = TrainingCost([("conv", conv)])
    x = _binary_input((2, 3, 4, 5, 5), 0.2)  # [T, N, C, H, W]
    conv(x).sum().backward()
    step = cost.end_step()
    macs = 2 * 3 * 6 * 5 * 5 * 4 * 9
    assert step["flops_forward"] == pytest.approx(2 * macs * density)
    assert step["flops_backward"] == pytest.approx(4 * macs * density)
    assert step["sops_forward"] == pytest.approx(macs * density * 0.2)
    assert step["sops_backward"] == pytest.approx(macs * density + macs * density * 0.2)
    assert step["dense_flops"] == pytest.approx(6 * macs)
    assert cost.take_input_rates() == {"conv": pytest.approx(0.2)}


def test_dense_gradient_steps_and_strided_grouped_conv():
    conv = SparseSpikingConv2d(4, 8, 3, stride=2, groups=2)
    conv.dense_weight_grad = True
    cost = TrainingCost([("conv", conv)])
    conv(torch.ones(3, 4, 9, 9)).sum().backward()
    step = cost.end_step()
    macs = 3 * 8 * 4 * 4 * 2 * 9  # out 4x4, 2 input channels per group
    assert step["flops_backward"] == pytest.approx(2 * macs + 2 * macs)
    assert step["sops_forward"] == pytest.approx(macs)  # all inputs nonzero, dense layer


def test_linear_cost_and_eval_is_not_counted():
    linear = SparseLinear(10, 3)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, :5] = True
    linear.set_mask(mask)
    cost = TrainingCost([("fc", linear)])
    with torch.no_grad():
        linear(torch.ones(7, 10))
    linear.eval()
    linear(torch.ones(7, 10))
    assert cost.end_step()["flops_forward"] == 0.0
    linear.train()
    linear(torch.ones(2, 7, 10)).sum().backward()
    step = cost.end_step()
    assert step["flops_forward"] == pytest.approx(2 * (2 * 7 * 3 * 10) * 0.5)
    summary = cost.summary()
    assert summary["flops"] == pytest.approx(summary["flops_forward"] + summary["flops_backward"])
    assert summary["flops_relative_to_dense"] == pytest.approx(0.5)


def test_cost_follows_mask_changes_after_each_step():
    linear = SparseLinear(4, 4, bias=False)
    cost = TrainingCost([("fc", linear)])
    linear(torch.ones(1, 4)).sum().backward()
    assert cost.end_step()["flops_forward"] == pytest.approx(32)
    linear.set_mask(torch.eye(4, dtype=torch.bool))  # what a method does in its step
    cost.refresh_densities()
    linear(torch.ones(1, 4)).sum().backward()
    assert cost.end_step()["flops_forward"] == pytest.approx(8)


def test_checkpoint_round_trip_and_permissions(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint({"kind": "train", "x": torch.arange(3)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))
    assert os.stat(path).st_mode & 0o044  # readable by others (not mkstemp's 0600)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"kind": "train", "step": 1}, path)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"kind": "train", "step": 2, "bad": _Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_corrupt_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"kind": "train"}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="not an ndsnn train file"):
        load_checkpoint(path)


def test_config_files(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "method: rigl\nsparsity: 0.95\nbatch-size: 32\nmethod_options:\n  drop_fraction: 0.5\n"
    )
    values = load_config_file(tmp_path / "a.yaml")
    config = TrainConfig.from_dict(values)
    assert (config.method, config.sparsity, config.batch_size) == ("rigl", 0.95, 32)
    assert config.method_options == {"drop_fraction": 0.5}
    (tmp_path / "b.json").write_text(json.dumps({"epochs": 3}))
    assert TrainConfig.from_dict(load_config_file(tmp_path / "b.json")).epochs == 3
    (tmp_path / "bad.yaml").write_text("method: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(tmp_path / "bad.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(tmp_path / "list.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown option 'sparsty'"):
        TrainConfig.from_dict({"sparsty": 0.9})


@pytest.mark.parametrize(
    "options, message",
    [({"sparsity": 1.0}, r"--sparsity must be a number in \[0, 1\)"), ({"sparsity": -0.1}, "--sparsity"),
     ({"sparsity": "high"}, "--sparsity"), ({"epochs": 0}, "--epochs must be a finite number > 0"),
     ({"batch_size": 2.5}, "--batch-size"), ({"lr": 0}, "--lr"), ({"momentum": 1.0}, "--momentum"),
     ({"model": "alexnet"}, "--model must be one of"), ({"dataset": "mnist"}, "--dataset must be one of"),
     ({"method": "magic"}, "--method must be one of"), ({"optimizer": "lbfgs"}, "--optimizer"),
     ({"device": "tpu"}, "--device"), ({"init_density": 0.05}, "at least the final density"),
     ({"init_density": 1.5}, "--init-density"), ({"workers": -1}, "--workers"), ({"amp": "yes"}, "amp"),
     ({"train_samples": 0}, "--train-samples"), ({"timesteps": True}, "--timesteps")],
)  # fmt: skip
def test_config_validation_names_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(options)


def test_metrics_log_resume_drops_lines_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.start(None)
    for step in range(1, 6):
        log.write({"kind": "step", "step": step})
    with open(log.path, "a") as handle:
        handle.write('{"kind": "step", "st')  # a line cut by a crash
    log.start(3)
    assert [r["step"] for r in log.read()] == [1, 2, 3]


def test_compact_export_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.create("convnet", 10, 1, timesteps=2, image_size=8)
    for module in model.modules():
        if isinstance(module, (SparseSpikingConv2d, SparseLinear)):
            module.set_mask(torch.rand(module.weight.shape) < 0.1)
    model.eval()
    spec = {"name": "convnet", "num_classes": 10, "in_channels": 1, "timesteps": 2, "image_size": 8}
    path = export_compact(model, spec, "digits", tmp_path / "model.pt")
    loaded, saved = load_compact(path)
    loaded.eval()
    assert saved["dataset"] == "digits"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    images = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    dense_bytes = sum(p.numel() * 4 for p in model.parameters())
    kept = sum(entry["values"].numel() for entry in compact_state(model, spec, "digits")["sparse"].values())
    assert kept < 0.2 * sum(p.numel() for p in model.parameters())
    assert path.stat().st_size < 0.5 * dense_bytes
    with pytest.raises(CheckpointError, match="not an ndsnn compact file"):
        save_checkpoint({"kind": "train"}, tmp_path / "train.pt")
        load_compact(tmp_path / "train.pt")


def test_more_processes_than_gpus_is_a_clear_error():
    from ndsnn.train.config import ConfigError
    from ndsnn.train.trainer import local_cuda_device

    visible = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"LOCAL_RANK {visible} but only {visible} GPU\(s\) are visible"):
        local_cuda_device(visible)
