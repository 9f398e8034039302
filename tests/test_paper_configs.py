"""The papers' setups in configs/papers/: every file loads, validates and holds what ndsnn.reproduce.papers
records; the committed files are its rendering; every documented command parses to the intended run; each
(data set, model) pair trains end to end with its one command on tiny generated files (and under torchrun);
and the measured-against-reported comparison matches a hand computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ndsnn.cli import build_parser, train_config
from ndsnn.data import DATASETS
from ndsnn.data import testing as fake_data
from ndsnn.models import MODELS
from ndsnn.reproduce import papers
from ndsnn.sparse import METHODS
from ndsnn.train import TrainConfig, load_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / papers.CONFIG_DIR
# Tiny sizes on top of a paper command: 2 steps an epoch, T = 1, a few generated images.
TINY = ["--epochs", "2", "--timesteps", "1", "--batch-size", "2", "--train-samples", "4", "--test-samples", "2",
        "--no-progress", "--no-plots"]  # fmt: skip


def test_the_six_setups_and_nothing_else():
    pairs = {(s.dataset, s.model) for s in papers.SETUPS}
    assert pairs == {(d, m) for d in ("cifar10", "cifar100", "tiny-imagenet") for m in ("vgg16", "resnet19")}
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(f"{s.name}.yaml" for s in papers.SETUPS)


@pytest.mark.parametrize("setup", papers.SETUPS, ids=lambda s: s.name)
def test_config_loads_validates_and_equals_the_record(setup):
    values = load_config_file(REPO / setup.path)
    assert values == setup.options()
    assert values["model"] in MODELS and values["dataset"] in DATASETS and values["method"] in METHODS
    config = TrainConfig.from_dict(values, source=setup.path)
    assert (config.timesteps, config.epochs, config.batch_size) == (5, 300, 128)
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay, config.schedule) == (
        "sgd", 0.1, 0.9, 5e-4, "cosine")  # fmt: skip
    assert (REPO / setup.path).read_text() == papers.render_config(setup)  # comments and sources included


def test_readme_is_the_rendering(capsys):
    assert (CONFIGS / "README.md").read_text() == papers.render_readme()
    assert papers.main([]) == 0
    assert capsys.readouterr().out == papers.render_readme()


def test_write_reproduces_the_committed_files(tmp_path):
    written = papers.write(tmp_path)
    assert len(written) == len(papers.SETUPS) + 1
    for path in written:
        assert path.read_text() == (CONFIGS / path.name).read_text()


def test_every_figure_names_its_source_and_unread_ones_are_none():
    figures = papers.reported()
    assert all(f.source in papers.SOURCES for f in figures)
    for figure in figures:
        assert (figure.value is None) == (figure.note == papers.NOT_FOUND), figure
    known = {(f.setup, f.quantity): f.value for f in figures if f.value is not None}
    assert known == {("cifar10-resnet19", "cost_vs_lth"): 40.89, ("cifar10-vgg16", "cost_vs_lth"): 31.35,
                     ("tiny-imagenet-resnet19", "gain"): 20.52}  # fmt: skip
    accuracies = [f for f in figures if f.quantity == "accuracy"]
    assert len(accuracies) == len(papers.SETUPS) * (4 * len(papers.SPARSITIES) + 1)


@pytest.mark.parametrize("setup", papers.SETUPS, ids=lambda s: s.name)
def test_documented_commands_parse_to_the_intended_runs(setup):
    for method in papers.METHODS:
        for sparsity in papers.SPARSITIES:
            words = papers.command(setup, method, sparsity)
            assert words[:2] == ["ndsnn", "train"]
            config = train_config(build_parser().parse_args(words[1:]))
            assert (config.model, config.dataset) == (setup.model, setup.dataset)
            assert config.method == ("static" if method == "dense" else method)
            assert config.sparsity == (0.0 if method == "dense" else sparsity)
            assert config.epochs == 300 and config.timesteps == 5 and config.batch_size == 128
            if method == "lth":
                steps = {"cifar10": 391, "cifar100": 391, "tiny-imagenet": 782}[setup.dataset]
                assert config.method_options == {"prune_rate": 0.25, "rewind_step": 20 * steps}
            else:
                assert config.method_options == {}


def test_torchrun_command_keeps_the_global_batch():
    setup = papers.setup("cifar100-resnet19")
    words = papers.command(setup, "rigl", 0.95, processes=4)
    assert words[:6] == ["torchrun", "--standalone", "--nproc_per_node=4", "-m", "ndsnn", "train"]
    config = train_config(build_parser().parse_args(words[5:]))
    assert config.batch_size * 4 == 128 and config.method == "rigl" and config.sparsity == 0.95
    with pytest.raises(ValueError, match="divide the global batch"):
        papers.command(setup, processes=3)
    assert (
        papers.lth_rounds(0.9) == 10 and papers.lth_rounds(0.99) == 18
    )  # 0.75^8 > 0.1 > 0.75^9, 0.75^16 > 0.01 > 0.75^17


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    fake_data.write_fake_cifar10(root, 8, 4)
    fake_data.write_fake_cifar100(root, 8, 4)
    fake_data.write_fake_tiny_imagenet(root, 8, 4)
    return root


def _run(words: list[str], data_dir: Path, out: Path, *extra: str) -> dict:
    """Runs a documented command (ndsnn or torchrun) from the repository root with tiny overrides."""
    launcher = (
        [sys.executable, "-m", "ndsnn"] if words[0] == "ndsnn" else [sys.executable, "-m", "torch.distributed.run"]
    )
    command = [*launcher, *words[1:], "--data-dir", str(data_dir), "--out", str(out), *TINY, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())


def _assert_file_settings_used(summary: dict) -> None:
    """The options the tiny run did not override come from the config file."""
    used = summary["config"]
    for name in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "distribution"):
        assert used[name] == papers.SETTING_VALUES[name], name
    assert summary["timesteps"] == 1 and used["epochs"] in (1, 2) and used["batch_size"] in (1, 2)  # overridden


@pytest.mark.parametrize("setup, sparsity", [(s, papers.SPARSITIES[i % 4]) for i, s in enumerate(papers.SETUPS)],
                         ids=lambda v: getattr(v, "name", str(v)))  # fmt: skip
def test_each_setup_trains_with_its_command(setup, sparsity, data_dir, tmp_path):
    summary = _run(papers.command(setup, "ndsnn", sparsity), data_dir, tmp_path / "run")
    assert (summary["dataset"], summary["model"], summary["method"]) == (setup.dataset, setup.model, "ndsnn")
    assert summary["completed"] and summary["steps"] == 4
    assert summary["target_sparsity"] == sparsity
    assert summary["sparsity"] == pytest.approx(sparsity, abs=2e-3)
    assert 0 < summary["training_cost"]["flops"] < summary["training_cost"]["dense_flops"]
    _assert_file_settings_used(summary)


@pytest.mark.parametrize("method", ["set", "rigl", "dense"])
def test_baseline_commands_train(method, data_dir, tmp_path):
    setup = papers.setup("cifar10-resnet19")
    summary = _run(papers.command(setup, method, 0.95), data_dir, tmp_path / method)
    assert summary["method"] == ("static" if method == "dense" else method) and summary["completed"]
    assert summary["sparsity"] == pytest.approx(0.0 if method == "dense" else 0.95, abs=2e-3)
    _assert_file_settings_used(summary)


def test_lth_command_trains_all_rounds(data_dir, tmp_path):
    """Kim et al.'s LTH at 90%: 10 rounds of one step here, so rewinding happens after the first step."""
    setup = papers.setup("cifar10-resnet19")
    summary = _run(papers.command(setup, "lth", 0.9), data_dir, tmp_path / "lth", "--epochs", "1",
                   "--train-samples", "2", "--method-option", "rewind_step=1")  # fmt: skip
    assert summary["method"] == "lth" and summary["completed"]
    assert summary["rounds"] == papers.lth_rounds(0.9) == 10 and summary["steps"] == 10
    assert summary["sparsity"] == pytest.approx(0.9, abs=2e-3)
    assert summary["config"]["method_options"] == {"prune_rate": 0.25, "rewind_step": 1}


def test_torchrun_command_trains_with_the_same_steps(data_dir, tmp_path):
    """Two processes at half the per-process batch take the steps one process takes: 4 images / batch 2 = 2."""
    setup = papers.setup("cifar10-resnet19")
    summary = _run(papers.command(setup, "set", 0.9, processes=2), data_dir, tmp_path / "two", "--epochs", "1",
                   "--batch-size", "1")  # fmt: skip
    assert summary["world_size"] == 2 and summary["steps"] == 2 and summary["completed"]
    assert summary["sparsity"] == pytest.approx(0.9, abs=2e-3)
    _assert_file_settings_used(summary)


def _summary(dataset: str, model: str, method: str, sparsity: float, accuracy: float, flops: float) -> dict:
    return {"dataset": dataset, "model": model, "method": method, "target_sparsity": sparsity,
            "test_accuracy": accuracy, "training_cost": {"flops": flops}}  # fmt: skip


def test_compare_matches_hand_computation(tmp_path, capsys):
    summaries = [
        _summary("cifar10", "resnet19", "ndsnn", 0.99, 0.80, 30.0),
        _summary("cifar10", "resnet19", "ndsnn", 0.99, 0.82, 34.0),
        _summary("cifar10", "resnet19", "lth", 0.99, 0.85, 100.0),
        _summary("cifar10", "resnet19", "static", 0.0, 0.90, 400.0),
        _summary("tiny-imagenet", "resnet19", "ndsnn", 0.99, 0.50, 1.0),
        _summary("tiny-imagenet", "resnet19", "rigl", 0.99, 0.30, 1.0),
        _summary("tiny-imagenet", "resnet19", "lth", 0.99, 0.40, 5.0),
    ]
    rows = papers.compare(summaries)
    accuracy = {(r["setup"], r["method"]): r for r in rows if r["quantity"] == "accuracy"}
    assert accuracy[("cifar10-resnet19", "ndsnn")]["measured"] == pytest.approx(81.0)
    assert accuracy[("cifar10-resnet19", "ndsnn")]["runs"] == 2
    assert accuracy[("cifar10-resnet19", "dense")]["sparsity"] == 0.0
    assert all(r["reported"] is None and r["gap"] is None for r in accuracy.values())
    claims = {(r["setup"], r["quantity"]): r for r in rows if r["quantity"] != "accuracy"}
    assert set(claims) == {("cifar10-resnet19", "cost_vs_lth"), ("tiny-imagenet-resnet19", "gain")}
    assert claims[("cifar10-resnet19", "cost_vs_lth")]["measured"] == pytest.approx(32.0)  # mean 32 / 100
    assert claims[("cifar10-resnet19", "cost_vs_lth")]["gap"] == pytest.approx(32.0 - 40.89)
    assert claims[("tiny-imagenet-resnet19", "gain")]["measured"] == pytest.approx(20.0)  # 50 - min(30, 40)
    assert claims[("tiny-imagenet-resnet19", "gain")]["gap"] == pytest.approx(-0.52)
    text = papers.render_compare(rows)
    assert "| cifar10-resnet19 | training cost, % of LTH's | ndsnn | 99% | 2 | 32.00 | 40.89 | -8.89 |" in text
    assert "| cifar10-resnet19 | test accuracy % | lth | 99% | 1 | 85.00 | n/f | n/f |" in text
    for index, summary in enumerate(summaries):  # the command line reads run directories or summary files
        (tmp_path / str(index)).mkdir()
        (tmp_path / str(index) / "summary.json").write_text(json.dumps(summary))
    paths = [str(tmp_path / str(i)) for i in range(len(summaries) - 1)] + [str(tmp_path / "6" / "summary.json")]
    assert papers.main(["--compare", *paths]) == 0
    assert capsys.readouterr().out == text
