"""The GRPO and SFT trainers: configs, validation before step 1, the step loop, evaluation, metrics logging and
safetensors checkpoints."""

from r1fast.trainer.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from r1fast.trainer.config import GRPOConfig
from r1fast.trainer.evaluation import Evaluation, evaluate
from r1fast.trainer.logging import MetricsLogger, read_metrics
from r1fast.trainer.sft import SFTConfig, SFTTrainer
from r1fast.trainer.trainer import GRPOTrainer, Rollout
from r1fast.trainer.validation import DatasetRowError, InputError

__all__ = ["CheckpointError", "CheckpointWarning", "DatasetRowError", "Evaluation", "GRPOConfig", "GRPOTrainer",
           "InputError", "MetricsLogger", "Rollout", "SFTConfig", "SFTTrainer", "evaluate", "latest_checkpoint",
           "load_checkpoint", "read_metrics", "save_checkpoint", "verify_checkpoint"]
