"""Every bad argument, data file or checkpoint given to `ndsnn train / evaluate / export` ends with a clear
one-line message and exit code 2, never a traceback."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pytest
import torch

from ndsnn.cli import main
from ndsnn.data import testing as fake_data

FAST = ["--epochs", "1", "--timesteps", "1", "--update-interval", "10", "--no-progress", "--no-plots"]


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    "args, fragments",
    [(["--sparsity", "1.5"], ["--sparsity must be a number in [0, 1), got 1.5"]),
     (["--sparsity", "-0.2"], ["--sparsity"]),
     (["--sparsity", "lots"], ["--sparsity", "invalid float value"]),
     (["--epochs", "0"], ["--epochs must be a finite number > 0"]),
     (["--batch-size", "-4"], ["--batch-size"]),
     (["--lr", "0"], ["--lr"]),
     (["--model", "alexnet"], ["--model", "invalid choice"]),
     (["--dataset", "mnist"], ["--dataset", "invalid choice"]),
     (["--method", "magic"], ["--method", "invalid choice"]),
     (["--device", "tpu"], ["--device must be"]),
     (["--method", "set", "--init-density", "0.5"], ["--init-density applies to --method ndsnn, criticality,",
                                                     "pq_index only, not set"]),
     (["--init-density", "0.05"], ["at least the final density"]),
     (["--method-option", "frobnicate=1"], ["--method ndsnn", "frobnicate"]),
     (["--method-option", "drop_fraction=2"], ["--method ndsnn", "drop_fraction must be in [0, 1]"]),
     (["--method-option", "novalue"], ["--method-option expects KEY=VALUE"]),
     (["--train-samples", "100000"], ["--train-samples is 100000, but the split has only 1438"]),
     (["--config", "/nonexistent/run.yaml"], ["--config: cannot read /nonexistent/run.yaml"]),
     (["--resume", "/nonexistent/checkpoint.pt"], ["checkpoint /nonexistent/checkpoint.pt does not exist"]),
     (["--resume"], ["--resume without a path needs --out"]),
     (["--lr", "inf"], ["--lr must be a finite number > 0, got inf"]),
     (["--lr", "nan"], ["--lr must be a finite number > 0, got nan"]),
     (["--weight-decay", "inf"], ["--weight-decay must be a finite number >= 0"]),
     (["--device", "cuda:x"], ["--device must be"])],
)  # fmt: skip
def test_bad_train_options(capsys, tmp_path, args, fragments):
    _fails(capsys, ["train", *FAST, *args, "--out", str(tmp_path / "run")] if "--resume" not in args
           else ["train", *args], *fragments)  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_a_gpu(capsys, tmp_path):
    _fails(capsys, ["train", *FAST, "--device", "cuda", "--out", str(tmp_path)], "CUDA is not available")


def test_config_file_errors(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sparsity: [0.9\n")
    _fails(capsys, ["train", "--config", str(bad)], "not valid YAML", str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sparsty: 0.9\n")
    _fails(capsys, ["train", "--config", str(unknown)], "unknown option 'sparsty'")
    out_of_range = tmp_path / "range.json"
    out_of_range.write_text('{"sparsity": 1.2}')
    _fails(capsys, ["train", "--config", str(out_of_range)], "--sparsity must be a number in [0, 1)")


def test_missing_and_corrupt_data_files(capsys, tmp_path):
    _fails(capsys, ["train", *FAST, "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"), "--out",
                    str(tmp_path / "a")], "cifar", str(tmp_path / "nothing"), "cs.toronto.edu")  # fmt: skip
    data = fake_data.write_fake_fashion_mnist(tmp_path / "fashion", 8, 4)
    images = next(data.rglob("train-images-idx3-ubyte.gz"))
    images.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 10))  # right magic, truncated body
    _fails(capsys, ["train", *FAST, "--dataset", "fashion-mnist", "--data-dir", str(data), "--out",
                    str(tmp_path / "b")], "train-images-idx3-ubyte.gz")  # fmt: skip


def test_corrupt_checkpoints(capsys, tmp_path):
    corrupt = tmp_path / "checkpoint.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    _fails(capsys, ["train", "--resume", str(corrupt)], "is corrupt", str(corrupt))
    _fails(capsys, ["evaluate", "--checkpoint", str(corrupt)], "is corrupt")
    _fails(capsys, ["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.pt")],
           "does not exist")  # fmt: skip
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    _fails(capsys, ["evaluate", "--checkpoint", str(foreign)], "not an ndsnn train file")


def test_no_traceback_in_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ndsnn", "train", "--sparsity", "2", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "ndsnn train: error: --sparsity must be a number in [0, 1), got 2.0"


@pytest.mark.parametrize(
    "text, fragment",
    [("epochs: ten\n", "--epochs must be a finite number > 0, got 'ten'"),
     ("device: 5\n", "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 5"),
     ("model: [vgg16]\n", "--model must be one of"),
     ("out: 5\n", "--out must be a path, got 5"),
     ("data_dir: [a]\n", "--data-dir must be a path"),
     ("deterministic: 'no'\n", "deterministic must be true or false, got 'no'"),
     ("amp: 1\n", "amp must be true or false, got 1"),
     ("method_options: {1: 2}\n", "method_options must be a mapping of option names"),
     ("lr: .inf\n", "--lr must be a finite number > 0, got inf")],
)  # fmt: skip
def test_config_values_of_the_wrong_type(capsys, tmp_path, text, fragment):
    config = tmp_path / "run.yaml"
    config.write_text(text if text.startswith("out:") else text + f"out: {tmp_path / 'run'}\n")
    _fails(capsys, ["train", "--config", str(config)], fragment)


def test_unreadable_config_and_output_places(capsys, tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00epochs: 1")
    _fails(capsys, ["train", "--config", str(binary)], "is not UTF-8 text")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    _fails(capsys, ["train", *FAST, "--out", str(a_file)], f"--out {a_file} is a file, not a directory")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if os.access(read_only, os.W_OK):  # root ignores permissions: nothing to check there
            pytest.skip("running as a user that can write anywhere")
        _fails(capsys, ["train", *FAST, "--out", str(read_only / "run")], str(read_only))
    finally:
        read_only.chmod(0o700)


def test_resume_refuses_changed_options_before_building_anything(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--stop-after-steps", "2", "--out", str(out)]) == 0
    _fails(capsys, ["train", "--resume", str(out / "checkpoint.pt"), "--model", "vgg16"],
           "trained with other options: model='convnet' (now 'vgg16')")  # fmt: skip
    config = tmp_path / "other.yaml"
    config.write_text("epochs: 3\n")
    _fails(capsys, ["train", "--resume", str(out / "checkpoint.pt"), "--config", str(config)], "--config cannot")


def test_a_model_that_cannot_take_the_data_set(capsys, tmp_path):
    _fails(capsys, ["train", *FAST, "--model", "vgg16", "--out", str(tmp_path / "run")],
           "--model vgg16 on --dataset digits", "multiple of 32")  # fmt: skip


def test_evaluate_and_export_arguments(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    checkpoint = str(out / "checkpoint.pt")
    _fails(capsys, ["evaluate", "--checkpoint", checkpoint, "--batch-size", "0"], "--batch-size must be a positive")
    _fails(capsys, ["evaluate", "--checkpoint", checkpoint, "--device", "tpu"], "--device must be")
    _fails(capsys, ["export", "--checkpoint", checkpoint, "--out", str(tmp_path)], "is a directory")


@pytest.mark.parametrize(
    "args, fragment",
    [(["--epochs", "0"], "--epochs must be a positive number, got 0"),
     (["--timesteps", "-1"], "--timesteps must be a positive integer"),
     (["--train-samples", "0"], "--train-samples must be a positive integer"),
     (["--seeds", "-1"], "--seeds must be non-negative integers"),
     (["--sparsities", "1.5"], "--sparsities must be in [0, 1), got 1.5")],
)  # fmt: skip
def test_bad_reproduce_options(capsys, tmp_path, args, fragment):
    _fails(capsys, ["reproduce", "fashion-mnist", *args, "--out", str(tmp_path / "sweep")], fragment)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "variable, value, fragment",
    [("NDSNN_KERNELS", "fast", "NDSNN_KERNELS must be one of auto, prebuilt, jit, off; got 'fast'"),
     ("NDSNN_SPARSE_CONV_MAX_DENSITY", "lots", "NDSNN_SPARSE_CONV_MAX_DENSITY must be a number in [0, 1]"),
     ("NDSNN_CROSSOVER_FILE", "/nonexistent/table.json", "NDSNN_CROSSOVER_FILE: crossover table"),
     ("NDSNN_CACHE_DIR", "/proc/no/such/place", "NDSNN_CACHE_DIR=/proc/no/such/place cannot be created")],
)  # fmt: skip
def test_bad_environment_settings_in_a_real_process(tmp_path, variable, value, fragment):
    env = {**os.environ, variable: value}
    if variable == "NDSNN_CACHE_DIR":
        env["NDSNN_KERNELS"] = "jit"  # the cache matters where kernels are compiled on first use
    result = subprocess.run([sys.executable, "-m", "ndsnn", "train", *FAST, "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"ndsnn train: error: {result.stderr.split('error: ', 1)[1].strip()}"]
    assert fragment in result.stderr


def test_a_half_missing_data_dir_is_reported_not_completed(capsys, tmp_path):
    data = fake_data.write_fake_fashion_mnist(tmp_path / "fashion", 8, 4)
    next(data.rglob("t10k-labels-idx1-ubyte.gz")).unlink()
    _fails(capsys, ["train", *FAST, "--dataset", "fashion-mnist", "--data-dir", str(data), "--out",
                    str(tmp_path / "run")], "t10k-labels-idx1-ubyte.gz", str(data))  # fmt: skip


def test_a_data_error_inside_a_loader_worker_is_one_line(tmp_path):
    data = fake_data.write_fake_tiny_imagenet(tmp_path / "data", 12, 6)
    broken = sorted(data.rglob("*.JPEG"))[0]
    broken.write_bytes(b"not a jpeg")
    result = subprocess.run([sys.executable, "-m", "ndsnn", "train", *FAST, "--dataset", "tiny-imagenet", "--model",
                             "resnet19", "--batch-size", "6", "--workers", "2", "--data-dir", str(data), "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert broken.name in result.stderr and "Traceback" not in result.stderr
