"""Files from other people are data: a checkpoint or compact model that would run code when unpickled is
refused before anything in it runs, and a tampered or incomplete file is refused with one line naming what
is wrong, from every command that reads one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ndsnn.cli import main
from ndsnn.train import CheckpointError, load_checkpoint, load_compact
from ndsnn.train.export import compact_state

FAST = ["--epochs", "1", "--timesteps", "1", "--update-interval", "10", "--no-progress", "--no-plots"]


class _RunsACommand:
    """Unpickling this calls os.system: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    assert main(["train", *FAST, "--out", str(out)]) == 0
    return out


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("kind", ["train", "compact"])
def test_a_checkpoint_that_would_run_code_is_refused_everywhere(tmp_path, capsys, trained, kind):
    marker = tmp_path / "owned"
    hostile = tmp_path / f"{kind}.pt"
    source = load_checkpoint(trained / ("checkpoint.pt" if kind == "train" else "model_compact.pt"), kind=kind)
    torch.save({**source, "extra": _RunsACommand(marker)}, hostile)
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain data"):
        load_checkpoint(hostile, kind=kind)
    commands = [
        ["evaluate", "--checkpoint", str(hostile)],
        ["export", "--checkpoint", str(hostile), "--out", str(tmp_path / "out.pt")],
        ["export", "--checkpoint", str(hostile), "--format", "nir", "--out", str(tmp_path / "out.nir")],
    ]
    if kind == "train":
        commands.append(["train", "--resume", str(hostile)])
    else:
        with pytest.raises(CheckpointError, match="posix.system|os.system"):
            load_compact(hostile)
    for argv in commands:
        _fails(capsys, argv, "holds objects other than tensors and plain data", str(hostile))
    assert not marker.exists()


def test_the_refusal_holds_in_a_real_process(tmp_path):
    marker = tmp_path / "owned"
    hostile = tmp_path / "checkpoint.pt"
    torch.save({"kind": "train", "payload": _RunsACommand(marker)}, hostile)
    result = subprocess.run([sys.executable, "-m", "ndsnn", "evaluate", "--checkpoint", str(hostile)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not marker.exists()


def test_checkpoints_hold_only_plain_data(trained):
    """What ndsnn writes loads with the weights-only loader, random state included."""
    for name in ("checkpoint.pt", "model_compact.pt"):
        torch.load(trained / name, weights_only=True)
    state = load_checkpoint(trained / "checkpoint.pt")
    assert isinstance(state["rng"]["numpy"][1], torch.Tensor)


def _compact(trained: Path) -> dict:
    return torch.load(trained / "model_compact.pt", weights_only=True)


def _tampered(trained: Path, tmp_path: Path, change) -> Path:
    state = _compact(trained)
    change(state)
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    return path


def _first_sparse(state: dict) -> dict:
    return state["sparse"][next(iter(state["sparse"]))]


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda s: _first_sparse(s).update(indices=_first_sparse(s)["indices"] + 10**6), "indices must lie in"),
        (lambda s: _first_sparse(s).update(indices=-_first_sparse(s)["indices"] - 1), "indices must lie in"),
        (lambda s: _first_sparse(s).update(indices=_first_sparse(s)["indices"].flip(0)), "strictly increasing"),
        (lambda s: _first_sparse(s).update(indices=torch.cat([_first_sparse(s)["indices"][:1]] * 2),
                                           values=torch.ones(2)), "strictly increasing"),  # fmt: skip
        (lambda s: _first_sparse(s).update(indices=_first_sparse(s)["indices"].float()), "int32 or int64"),
        (lambda s: _first_sparse(s).update(values=_first_sparse(s)["values"][:-1]), "one value per index"),
        (lambda s: _first_sparse(s).update(values=_first_sparse(s)["values"] * float("nan")), "not finite"),
        (lambda s: _first_sparse(s).update(shape=(3, 3)), "has shape"),
        (lambda s: s["sparse"].update({"nonexistent.weight": _first_sparse(s)}), "is not a masked weight"),
        (lambda s: s["model"].update(num_classes=10**9), "is not one ndsnn builds"),
        (lambda s: s["model"].update(timesteps=10**9), "timesteps must be an integer"),
        (lambda s: s["model"].update(extra=1), "must hold exactly"),
        (lambda s: s.update(dataset="imagenet"), "unknown data set"),
        (lambda s: s["dense"].update({next(iter(s["dense"])): torch.zeros(7)}), "does not fit the model"),
        (lambda s: s.pop("dense"), "'dense' entries must be mappings"),
    ],
)  # fmt: skip
def test_a_tampered_compact_file_is_refused(tmp_path, capsys, trained, change, fragment):
    path = _tampered(trained, tmp_path, change)
    with pytest.raises(CheckpointError, match=fragment):
        load_compact(path)
    _fails(capsys, ["evaluate", "--checkpoint", str(path)], fragment)


def test_an_incomplete_or_wrong_checkpoint_is_refused(tmp_path, capsys, trained):
    state = load_checkpoint(trained / "checkpoint.pt")
    incomplete = tmp_path / "incomplete.pt"
    torch.save({k: v for k, v in state.items() if k not in ("optimizer", "rng")}, incomplete)
    _fails(capsys, ["train", "--resume", str(incomplete)], "is incomplete: it lacks optimizer, rng")
    wrong_weights = tmp_path / "wrong.pt"
    model = dict(state["model"])
    model[next(iter(model))] = torch.zeros(1)
    torch.save({**state, "model": model}, wrong_weights)
    _fails(capsys, ["evaluate", "--checkpoint", str(wrong_weights)], "does not fit the model")
    _fails(capsys, ["train", "--resume", str(wrong_weights)], "does not fit this run")
    bad_options = tmp_path / "options.pt"
    torch.save({**state, "config": {**state["config"], "model": "alexnet"}}, bad_options)
    _fails(capsys, ["evaluate", "--checkpoint", str(bad_options)], "holds options ndsnn cannot use", "--model")


def test_compact_round_trip_still_exact(trained):
    model, saved = load_compact(trained / "model_compact.pt")
    again = compact_state(model, saved["model"], saved["dataset"])
    for key, entry in saved["sparse"].items():
        assert torch.equal(entry["indices"], again["sparse"][key]["indices"])
        assert torch.equal(entry["values"], again["sparse"][key]["values"])
