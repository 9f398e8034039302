"""Every bad argument, data file or checkpoint given to `ndsnn train / evaluate / export` ends with a clear
one-line message and exit code 2, never a traceback."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
import torch

from ndsnn.cli import main
from ndsnn.data import testing as fake_data

FAST = ["--epochs", "1", "--timesteps", "1", "--no-progress", "--no-plots"]


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
     (["--epochs", "0"], ["--epochs must be a positive integer"]),
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
     (["--resume"], ["--resume without a path needs --out"])],
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
