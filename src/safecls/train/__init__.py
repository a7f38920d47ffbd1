"""The training room: both stages of the safety [CLS] method on Accelerate (single process, DDP, FSDP, DeepSpeed)."""

from safecls.train.config import TrainConfig
from safecls.train.trainer import StepMetrics, TrainResult, train

__all__ = ["StepMetrics", "TrainConfig", "TrainResult", "train"]
