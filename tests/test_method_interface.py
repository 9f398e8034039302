"""The method interface, declared on SparseMethod: a new method is one subclass plus one registry line, and
then trains from the command line, answers the trainer's questions (initial density, rounds, auxiliary loss,
schedule checks) by its declarations, and runs in a sweep with its own row in the table."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import ndsnn
from ndsnn.cli import main
from ndsnn.data.testing import write_fake_fashion_mnist
from ndsnn.reproduce import BUDGETS, run_sweep, table_rows
from ndsnn.sparse.methods import METHODS, SparseMethod


class ShuffleSmallest(SparseMethod):
    """A method written outside the library: every update, moves the smallest 10% of each layer's kept weights
    to random pruned positions; adds a small penalty of its own to the loss."""

    name = "shuffle_smallest"

    def __init__(self, *args, penalty: float = 1e-4, **kwargs) -> None:
        self.penalty, self.penalties_added = penalty, 0
        super().__init__(*args, **kwargs)

    def update(self) -> dict:
        plans = []
        for _, layer in self.layers:
            n = round(0.1 * int(layer.weight_mask.sum()))
            plans.append((layer, n, n, layer.weight.detach().abs(), None))
        return self.counts_record(self.drop_and_grow(plans))

    def auxiliary_loss(self, images: torch.Tensor) -> torch.Tensor | None:
        self.penalties_added += 1
        return self.penalty * sum(layer.weight.square().sum() for _, layer in self.layers)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(METHODS, ShuffleSmallest.name, ShuffleSmallest)  # the one registry line
    return ShuffleSmallest


def test_the_base_declares_what_the_trainer_asks(registered):
    model = ndsnn.models.create("convnet", 10, 1, 2, 8)
    method = registered(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.8, total_steps=100,
                        update_interval=20)  # fmt: skip
    assert (method.takes_init_density, method.rounds, method.round, method.next_round()) == (False, 1, 0, False)
    assert method.update_steps() == [20, 40, 60, 80, 100] and method.schedule_problem() is None
    assert {name for name, m in METHODS.items() if m.takes_init_density} == {"ndsnn", "criticality", "pq_index"}
    assert METHODS["lth"].rounds is not SparseMethod.rounds  # LTH declares its rounds


def test_a_new_method_trains_from_the_command_line(registered, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "shuffle_smallest", "--sparsity", "0.8", "--epochs", "2", "--timesteps", "1",
                 "--update-interval", "10", "--method-option", "penalty=0.001", "--no-progress", "--no-plots",
                 "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "shuffle_smallest" and summary["sparsity"] == pytest.approx(0.8, abs=2e-3)
    assert summary["steps"] == 46 and summary["schedule_warning"] is None and summary["update_interval"] == 10
    log = torch.load(out / "checkpoint.pt", weights_only=True)["method"]["log"]
    assert log and all(sum(r["dropped"].values()) > 0 for r in log)
    assert main(["train", "--method", "shuffle_smallest", "--init-density", "0.5", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--init-density applies to --method ndsnn, criticality, pq_index only, not shuffle_smallest" in err


def test_the_trainer_adds_the_method_s_own_loss(registered, tmp_path):
    from ndsnn.train import TrainConfig
    from ndsnn.train.trainer import Trainer

    trainer = Trainer(TrainConfig(method="shuffle_smallest", epochs=1, timesteps=1, progress=False,
                                  update_interval=10), tmp_path)  # fmt: skip
    trainer.fit()
    assert trainer.method.penalties_added == trainer.step == 23


def test_a_new_method_runs_in_a_sweep_with_its_own_row(registered, tmp_path):
    data = write_fake_fashion_mnist(tmp_path / "data", 64, 32)
    budget = dataclasses.replace(BUDGETS["cpu"], methods=("dense", "shuffle_smallest"), sparsities=(0.75,),
                                 seeds=(0,), epochs=1, timesteps=1, train_samples=64, test_samples=None,
                                 equal_cost=(), peers=())  # fmt: skip
    budget.validate()
    rows = table_rows(run_sweep(budget, tmp_path / "sweep", str(data), in_process=True, log=lambda line: None))
    assert [r["method"] for r in rows] == ["dense", "shuffle_smallest"]
    with pytest.raises(SystemExit) as exit_code:  # the registry is the list of choices
        main(["reproduce", "fashion-mnist", "--methods", "dense", "no_such_method"])
    assert exit_code.value.code == 2
