"""Server settings: one strict, frozen object that `create_app` keeps on `app.state`.

Nothing here reads the environment; `safecls serve` (serve/commands.py) builds it from flags and documents the
one environment variable it reads (SAFECLS_API_KEY).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import Field, SecretStr

from safecls.config import StrictModel
from safecls.inference.config import DecodeConfig, Policy

POLICY_ORDER: tuple[str, ...] = typing.get_args(Policy)  # weakest first


class ServeSettings(StrictModel):
    model_name: str = Field("safecls", min_length=1, description="The id /v1/models lists; requests must name it.")
    host: str = Field("127.0.0.1", description="Bind address. Loopback unless told otherwise.")
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Accepted Bearer keys for /v1/*; empty: no auth. /health and /metrics are open."
    )
    max_batch: int = Field(16, gt=0, description="Most sequences (rows) in one engine batch.")
    batch_wait_ms: float = Field(
        10.0, ge=0, description="The worker starts a batch once no new request has come for this long ..."
    )
    batch_wait_max_ms: float = Field(
        100.0, ge=0, description="... or this long after the oldest waiting request came, whichever is first."
    )
    max_queue: int = Field(256, gt=0, description="Most rows waiting for a batch; beyond it requests get 429.")
    max_tokens_cap: int = Field(2048, gt=0, description="Largest max_tokens a request may ask for (larger: 400).")
    default_max_tokens: int = Field(
        256, gt=0, description="max_tokens when a request gives none (lowered to what the context leaves)."
    )
    max_n: int = Field(8, gt=0, description="Largest n (choices per prompt).")
    max_body_bytes: int = Field(2 * 1024 * 1024, gt=0, description="Request bodies over this get 413.")
    request_timeout_s: float = Field(600.0, gt=0, description="Wall time per request, queueing included (then 504).")
    decode_defaults: DecodeConfig = Field(
        default_factory=DecodeConfig,
        description="Server-level safety policy, schedule and their parameters (policy, schedule, period, anneal_*, "
        "r2, r3, read_prompt, tau, threshold, refusal texts, cls_visible) and `fused`, which is batch-wide and never per request. "
        "Sampling fields (max_new_tokens, temperature, top_p, seed, stop) come from each request.",
    )
    allow_safety_overrides: bool = Field(
        True, description="Whether requests may override the safety settings through safety_* body fields."
    )
    min_policy: Policy = Field(
        "low", description="A request may not lower the policy below this (400 with param safety_policy)."
    )
    moderation_threshold: float | None = Field(
        None, gt=0, lt=1, description="/v1/moderations flags P(malicious) above this; None: the checkpoint's "
        "calibrated moderation threshold, else decode_defaults.threshold."
    )

    def key_values(self) -> list[str]:
        return [k.get_secret_value() for k in self.api_keys]

    def flag_threshold(self, engine: Any) -> float:
        """The moderation threshold: its own, else the checkpoint's calibrated moderation threshold (request reads
        only), else the decode threshold. The decode threshold is set for reads mid-reply too, so it flags far fewer
        harmful requests than a moderation user expects (the shipped model's: 29% of harmful dev requests)."""
        if self.moderation_threshold is not None:
            return self.moderation_threshold
        calibrated = getattr(engine.model, "moderation_threshold", None)
        if calibrated is not None:
            return calibrated
        return engine.resolve([self.decode_defaults])[0].threshold
