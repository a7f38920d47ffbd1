"""What the engine returns: one GenerationResult per prompt, and StepEvents while streaming."""

from __future__ import annotations

from dataclasses import dataclass

from safecls.inference.trace import SafetyTrace


@dataclass(slots=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "content_filter" | "cancelled"
    trace: SafetyTrace
    prompt_tokens: int
    completion_tokens: int
    prefill: str = ""


@dataclass(slots=True)
class StepEvent:
    """One row's progress in one step. `delta` is text that can no longer be rolled back."""

    row: int
    delta: str
    p_malicious: float | None
    finished: bool
    finish_reason: str | None
    result: GenerationResult | None = None
