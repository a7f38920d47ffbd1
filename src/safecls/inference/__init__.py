"""The decode engine: strategic attention, strategic decoding and re-classification schedules."""

from safecls.inference.config import DecodeConfig
from safecls.inference.engine import Engine
from safecls.inference.results import GenerationResult, StepEvent
from safecls.inference.trace import SafetyTrace

__all__ = ["DecodeConfig", "Engine", "GenerationResult", "SafetyTrace", "StepEvent"]
