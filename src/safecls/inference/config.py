"""Decode settings: a `generate()` argument, never stored in a checkpoint."""

from __future__ import annotations

import warnings
from typing import Literal, Self

from pydantic import Field, model_validator

from safecls.config import StrictModel
from safecls.data.refusals import REFUSAL_PREFIX  # training data and decoding must open refusals with the same words

Policy = Literal["low", "medium", "high"]
# What threshold and tau are for a model without calibrated values (safecls calibrate stores them with a checkpoint).
UNCALIBRATED: dict[str, float | int] = {"threshold": 0.5, "tau": 3}
Schedule = Literal["first", "every", "periodic", "annealing"]


class DecodeConfig(StrictModel):
    max_new_tokens: int = Field(128, gt=0, description="Tokens to generate after the prompt (and any prefill).")
    min_new_tokens: int = Field(0, ge=0, description="End-of-sequence is suppressed before this many new tokens.")
    temperature: float = Field(0.0, ge=0, le=10, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass, in (0, 1].")
    top_k: int = Field(0, ge=0, description="0 = no top-k cut.")
    repetition_penalty: float = Field(1.0, gt=0, description="CTRL-style penalty on tokens already present (1 = off).")
    stop: list[str] = Field(default_factory=list, description="Stop strings; the text is cut before the first one.")
    seed: int | None = Field(None, description="Per-sequence sampling seed; the same seed gives the same text in any batch.")
    policy: Policy = Field(
        "medium",
        description="Strategic decoding. low: ignore the head. medium (the paper's): malicious at the start -> the reply "
        "opens with the refusal prefix and the model explains; a confirmed switch mid-reply -> roll back to it and insert "
        "the prefix there. high: the first malicious read ends the reply with the fixed refusal (no tau wait; text "
        "before that read's newest token is kept).",
    )
    schedule: Schedule = Field(
        "annealing", description="When the [CLS] is read again during generation (see inference/schedules.py)."
    )
    period: int = Field(10, gt=0, description="periodic: read after every `period` tokens (the paper's 10).")
    anneal_dense: int = Field(8, ge=0, description="annealing: read after each of the first `anneal_dense` tokens ...")
    anneal_growth: float = Field(2.0, gt=1, description="... then at gaps growing by this factor ...")
    anneal_stop: int = Field(128, ge=0, description="... with a closing read at this many tokens, and none after.")
    r1: int | None = Field(None, gt=0, description="Deprecated, no effect (removed in 0.3): a refusal is re-read on the "
                                                   "schedule, as any reply (medium), not for a fixed r1 tokens.")
    r2: int = Field(10, gt=0, description="R2 (benign): a read sees the latest r2 generated tokens (more when the "
                                          "previous read was longer ago: no token goes unread).")
    r3: int = Field(10, ge=0, description="R3 (benign -> malicious at S_t): reads see tokens [S_t - r2, S_t + r3].")
    read_prompt: bool = Field(True, description="Do R2/R3 reads see the prompt's content too (False: the generated "
                                                "window only, the paper's Rule 2)?")
    tau: int | None = Field(None, gt=0, description="Consecutive malicious reads that confirm a benign -> malicious "
                                                    "switch (medium). None: the checkpoint's calibrated value, else 3.")
    threshold: float | None = Field(None, gt=0, lt=1, description="P(malicious) above which a read says malicious. "
                                                                  "None: the checkpoint's calibrated value, else 0.5.")
    request_threshold: float | None = Field(
        None, gt=0, lt=1, description="The same for the request's read at the start (one per reply; reads of the "
                                      "reply, a prefill's included, are many). None: the checkpoint's calibrated "
                                      "request threshold where `threshold` is unset too, else `threshold`.")
    fused: bool = Field(True, description="Read [CLS] as an extra query row of the decode forward (False: a separate "
                                          "pass). The same for every row of a batch.")
    refusal_prefix: str = Field(REFUSAL_PREFIX, min_length=1)
    fixed_refusal: str = Field("Sorry, I cannot help with that request.", min_length=1,
                               description="The reply's ending under the high policy.")
    cls_visible: bool | None = Field(
        None, description="Do generated tokens attend the [CLS]? None: as trained (sft stage yes, pretrain stage no)."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.r1 is not None:
            warnings.warn("DecodeConfig.r1 has no effect and will be removed in safecls 0.3: a refusal is re-read on the "
                          "schedule like any reply. Remove r1 from the config", FutureWarning, stacklevel=2)
        return self

    def resolved(self, calibrated: dict[str, float | int] | None = None) -> DecodeConfig:
        """Concrete threshold and tau: this config's own, else the checkpoint's calibrated ones, else the defaults."""
        calibrated = calibrated or {}
        fill = {k: calibrated.get(k, UNCALIBRATED[k]) for k in UNCALIBRATED if getattr(self, k) is None}
        if self.request_threshold is None:
            # a calibrated request threshold belongs to the calibrated threshold: a threshold of one's own replaces both
            own = self.threshold is not None or calibrated.get("request_threshold") is None
            fill["request_threshold"] = fill.get("threshold", self.threshold) if own else calibrated["request_threshold"]
        return self.model_copy(update=fill) if fill else self

    @classmethod
    def authors(cls, **overrides) -> DecodeConfig:
        """The settings of the paper's scripts (r2=15, r3=10, tau=3, threshold 0.5; their r1=5 has no effect here)."""
        return cls(**{**PRESETS["authors"], **overrides})


def per_row(config: DecodeConfig | list[DecodeConfig] | tuple | None, n: int) -> list[DecodeConfig]:
    """One config for every row, or a list with one per row."""
    if config is None:
        return [DecodeConfig()] * n
    if isinstance(config, DecodeConfig):
        return [config] * n
    config = list(config)
    if len(config) != n:
        raise ValueError(f"got {n} prompts but {len(config)} decode configs")
    if len({c.fused for c in config}) > 1:
        raise ValueError("decode configs of one batch disagree on `fused` (it shapes the whole batch's forward). "
                         "Fix: give every row the same fused value")
    return config


PRESETS: dict[str, dict] = {"seed": {}, "authors": {"r2": 15, "r3": 10, "tau": 3, "threshold": 0.5}}
