"""Decode settings: a `generate()` argument, never stored in a checkpoint."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from safecls.config import StrictModel

REFUSAL_PREFIX = "Sorry, I cannot fulfill your request because"


class DecodeConfig(StrictModel):
    max_new_tokens: int = Field(128, gt=0, description="Tokens to generate after the prompt (and any prefill).")
    min_new_tokens: int = Field(0, ge=0, description="End-of-sequence is suppressed before this many new tokens.")
    temperature: float = Field(0.0, ge=0, le=10, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass, in (0, 1].")
    top_k: int = Field(0, ge=0, description="0 = no top-k cut.")
    repetition_penalty: float = Field(1.0, gt=0, description="CTRL-style penalty on tokens already present (1 = off).")
    stop: list[str] = Field(default_factory=list, description="Stop strings; the text is cut before the first one.")
    seed: int | None = Field(None, description="Per-sequence sampling seed; the same seed gives the same text in any batch.")
    policy: Literal["low", "medium", "high"] = Field(
        "medium",
        description="Strategic decoding. low: ignore the head. medium (the paper's): insert the refusal prefix and let "
        "the model explain. high: replace the answer with a fixed refusal and stop.",
    )
    schedule: Literal["first", "every", "periodic", "annealing"] = Field(
        "annealing", description="When the [CLS] is re-evaluated during generation (see inference/schedules.py)."
    )
    period: int = Field(4, gt=0, description="periodic: evaluate every `period` tokens.")
    anneal_dense: int = Field(8, ge=0, description="annealing: evaluate at each of the first `anneal_dense` tokens ...")
    anneal_growth: float = Field(2.0, gt=1, description="... then at gaps growing by this factor ...")
    anneal_stop: int = Field(128, ge=0, description="... and not after this many tokens.")
    r1: int = Field(10, gt=0, description="R1 (initially malicious): input + the first r1 generated tokens.")
    r2: int = Field(10, gt=0, description="R2 (benign): input + the latest r2 generated tokens.")
    r3: int = Field(10, ge=0, description="R3 (benign -> malicious at S_t): input + tokens [S_t - r2, S_t + r3].")
    tau: int = Field(3, gt=0, description="Consecutive malicious evaluations that confirm a benign -> malicious switch.")
    threshold: float = Field(0.5, gt=0, lt=1, description="P(malicious) above which an evaluation says malicious.")
    fused: bool = Field(True, description="Evaluate [CLS] as an extra query row of the decode forward (False: a separate pass).")
    refusal_prefix: str = Field(REFUSAL_PREFIX, min_length=1)
    fixed_refusal: str = Field("Sorry, I cannot help with that request.", min_length=1)
    cls_visible: bool | None = Field(
        None, description="Do generated tokens attend the [CLS]? None: as trained (sft stage yes, pretrain stage no)."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        return self

    @classmethod
    def authors(cls, **overrides) -> DecodeConfig:
        """The settings of the paper's scripts: r1=5, r2=15, r3=10, tau=3, threshold 0.5."""
        return cls(**{"r1": 5, "r2": 15, "r3": 10, "tau": 3, "threshold": 0.5, **overrides})


def per_row(config: DecodeConfig | list[DecodeConfig] | tuple | None, n: int) -> list[DecodeConfig]:
    """One config for every row, or a list with one per row."""
    if config is None:
        return [DecodeConfig()] * n
    if isinstance(config, DecodeConfig):
        return [config] * n
    config = list(config)
    if len(config) != n:
        raise ValueError(f"got {n} prompts but {len(config)} decode configs")
    return config


PRESETS = {"seed": {}, "authors": {"r1": 5, "r2": 15, "r3": 10, "tau": 3, "threshold": 0.5}}
