"""The decode engine: strategic attention, strategic decoding and re-classification schedules."""

from safecls.inference.config import DecodeConfig
from safecls.inference.engine import Engine, GenerationResult, StepEvent
from safecls.inference.trace import SafetyTrace

__all__ = ["DecodeConfig", "Engine", "GenerationResult", "SafetyTrace", "StepEvent"]
