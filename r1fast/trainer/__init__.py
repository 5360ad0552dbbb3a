"""The GRPO trainer: config, the step loop, metrics logging and safetensors checkpoints."""

from r1fast.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from r1fast.trainer.config import GRPOConfig
from r1fast.trainer.logging import MetricsLogger, read_metrics
from r1fast.trainer.trainer import GRPOTrainer, Rollout

__all__ = ["GRPOConfig", "GRPOTrainer", "MetricsLogger", "Rollout", "latest_checkpoint", "load_checkpoint",
           "read_metrics", "save_checkpoint"]
