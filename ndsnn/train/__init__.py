"""Training: the Trainer behind `ndsnn train`, its configuration, cost accounting, checkpoints, distributed
helpers, plots, evaluation and the compact export of trained sparse models."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, load_config_file
from .cost import TrainingCost
from .evaluate import evaluate_file, load_model
from .export import export_compact, load_compact
from .trainer import Trainer

__all__ = [
    "CheckpointError",
    "ConfigError",
    "TrainConfig",
    "Trainer",
    "TrainingCost",
    "evaluate_file",
    "export_compact",
    "load_checkpoint",
    "load_compact",
    "load_config_file",
    "load_model",
    "save_checkpoint",
]
