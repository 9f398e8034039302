"""The settings of a training run: defaults, loading from a YAML / JSON file, and validation with messages
that name the option and what it expects."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")


class ConfigError(ValueError):
    """An option has a value the trainer cannot use; the message names the option."""


@dataclass
class TrainConfig:
    """Every option of `ndsnn train`; the defaults are the README's main job (NDSNN, 90% sparsity, digits)."""

    model: str = "convnet"
    dataset: str = "digits"
    data_dir: str | None = None
    method: str = "ndsnn"
    sparsity: float = 0.9
    init_density: float | None = None  # ndsnn's starting density (its default 0.5 when None)
    distribution: str = "erk"
    update_interval: int | None = None  # None: total_steps // 25, at most 100 (the methods' default)
    method_options: dict[str, Any] = field(default_factory=dict)  # other keyword arguments of the method
    epochs: int | float = 20  # per round for methods that train in rounds; a fraction of an epoch is allowed
    timesteps: int = 4
    batch_size: int = 64  # per process
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    out: str | None = None
    device: str = "auto"
    workers: int = 0
    amp: bool = False
    checkpoint_interval: int = 0  # steps between checkpoints, besides the one after every epoch; 0: epochs only
    log_interval: int = 10  # steps between metric lines
    progress: bool = True
    debug_masks: bool = False  # compare a hash of the masks across ranks after every mask update
    deterministic: bool = False  # deterministic cuDNN / cuBLAS algorithms: bit-exact resume on GPU, slower
    train_samples: int | None = None  # a fixed random subset of the training split (quick runs); None: all
    test_samples: int | None = None
    stop_after_steps: int | None = None  # checkpoint and stop at this step (time-limited jobs); resume goes on

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Builds a config from a mapping whose keys are option names (dashes or underscores)."""
        known = set(cls.field_names())
        options = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(f"{source}: unknown option {key!r}; known: {', '.join(sorted(known))}")
            options[name] = value
        config = cls(**options)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raises ConfigError naming the first option whose value is unusable."""
        from ..data import DATASETS
        from ..models import MODELS
        from ..sparse import DISTRIBUTIONS, METHODS

        _choice("model", self.model, MODELS)
        _choice("dataset", self.dataset, DATASETS)
        _choice("method", self.method, METHODS)
        _choice("distribution", self.distribution, DISTRIBUTIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _number("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        if self.init_density is not None:
            _number("init-density", self.init_density, 0.0, 1.0, low_open=True)
            if self.init_density < 1.0 - self.sparsity:
                raise ConfigError(f"--init-density ({self.init_density}) must be at least the final density "
                                  f"1 - sparsity ({1.0 - self.sparsity:g})")  # fmt: skip
        _number("epochs", self.epochs, 0.0, math.inf, low_open=True)
        for name in ("timesteps", "batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("update_interval", "train_samples", "test_samples", "stop_after_steps"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("checkpoint_interval", "workers", "seed"):
            _non_negative_int(name, getattr(self, name))
        _positive_int("log_interval", self.log_interval)
        _number("lr", self.lr, 0.0, math.inf, low_open=True)
        _number("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _number("weight-decay", self.weight_decay, 0.0, math.inf)
        if not isinstance(self.method_options, dict) or not all(isinstance(k, str) for k in self.method_options):
            raise ConfigError(f"method_options must be a mapping of option names, got {self.method_options!r}")
        if not isinstance(self.device, str) or not is_device_name(self.device):
            raise ConfigError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        for name in ("out", "data_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value or "\0" in value):
                raise ConfigError(f"--{name.replace('_', '-')} must be a path, got {value!r}")
        for name in ("amp", "progress", "debug_masks", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The options in a YAML (.yaml / .yml) or JSON file, as a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--config: cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"--config: {path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:  # the parsers' own exception types differ
        raise ConfigError(f"--config: {path} is not valid {'YAML' if path.suffix != '.json' else 'JSON'}: "
                          f"{error}") from None  # fmt: skip
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of option names to values")
    return values


def is_device_name(name: str) -> bool:
    """auto, cpu, cuda or cuda:N."""
    if name in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = name.partition(":")
    return prefix == "cuda" and index.isdigit()


def _choice(name: str, value: Any, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}; got {value!r}")


def _number(name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if above and below:
            return
    if math.isinf(high):
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ConfigError(f"--{name.replace('_', '-')} must be {expected}, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


def _non_negative_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be a non-negative integer, got {value!r}")
