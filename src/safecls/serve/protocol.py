"""OpenAI wire models (requests bounded by Field limits, responses as the official client parses them), the one
error shape, and the one wire -> engine mapping (`to_decode_config`).

Extra fields safecls adds, which the official client keeps in `model_extra`:
- requests: `safety_policy`, `safety_schedule`, `safety_threshold`, `safety_period`, `safety_tau`,
  `safety_r2`, `safety_r3`, `safety_read_prompt` override the server's `decode_defaults` for that request (ServeSettings decides whether
  they are allowed, and the lowest policy a request may ask for);
- responses: `safety` on each choice (`SafetyInfo`): the head's P(malicious) on the prompt and at its last read,
  the steps it read, and what the policy did.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safecls.inference.config import DecodeConfig, Policy, Schedule
from safecls.inference.trace import SafetyTrace
from safecls.serve.settings import POLICY_ORDER, ServeSettings

logger = logging.getLogger(__name__)


# ---- errors ----------------------------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Sent as {"error": {...}}."""

    message: str
    type: str  # "invalid_request_error", "authentication_error", "rate_limit_error", "server_error", ...
    param: str | None = None  # the request field at fault
    code: str | None = None  # "model_not_found", "context_length_exceeded", "invalid_api_key", ...


class ServeError(Exception):
    """An error with its HTTP status and OpenAI fields; app.py has one handler for it (never match on text)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=type, param=param, code=code)


def error_payload(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": ErrorBody(message=message, type=type, param=param, code=code).model_dump()}


# ---- requests --------------------------------------------------------------------------------------------------------
class _Wire(BaseModel):
    # unknown client fields are logged at debug, not rejected: clients send many harmless extras
    model_config = ConfigDict(extra="allow")

    def log_extras(self) -> None:
        if self.model_extra:
            logger.debug("%s: ignoring unknown fields %s", type(self).__name__, sorted(self.model_extra))


class ContentPart(_Wire):
    type: str
    text: str | None = None


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def as_engine_message(self, i: int) -> dict[str, str]:
        if isinstance(self.content, list):
            if any(p.type != "text" or p.text is None for p in self.content):
                raise ServeError(400, f"messages.{i}.content: only text parts are supported", param=f"messages.{i}.content")
            text = "".join(p.text or "" for p in self.content)
        else:
            text = self.content or ""
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(_Wire):
    include_usage: bool = False


class _SafetyFields(_Wire):
    safety_policy: Policy | None = None
    safety_schedule: Schedule | None = None
    safety_threshold: float | None = Field(None, gt=0, lt=1)
    safety_period: int | None = Field(None, gt=0)
    safety_tau: int | None = Field(None, gt=0)
    safety_r2: int | None = Field(None, gt=0)
    safety_r3: int | None = Field(None, ge=0)
    safety_read_prompt: bool | None = None

    def safety_overrides(self) -> dict[str, Any]:
        return {name.removeprefix("safety_"): getattr(self, name) for name in _SafetyFields.model_fields
                if getattr(self, name) is not None}


class _GenerationRequest(_SafetyFields):
    model: str
    n: int | None = Field(None, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @property
    def choices_per_prompt(self) -> int:
        return self.n or 1

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16 or any(not s for s in stops):
            raise ServeError(400, "stop: give at most 16 non-empty strings", param="stop")
        return stops

    def check_supported(self) -> None:
        """Fields the engine cannot honour are refused, not silently ignored: they change what comes back."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ServeError(400, f"{name}: not supported by this server (use 0 or leave it out)", param=name)
        if self.logit_bias:
            raise ServeError(400, "logit_bias: not supported by this server", param="logit_bias")
        self.log_extras()

    def to_decode_config(self, settings: ServeSettings, max_tokens: int, seed: int | None) -> DecodeConfig:
        """The one wire -> engine mapping. `fused` always comes from the server: the engine applies it batch-wide."""
        overrides = self.safety_overrides()
        if overrides and not settings.allow_safety_overrides:
            name = "safety_" + next(iter(overrides))
            raise ServeError(400, f"{name}: this server does not accept per-request safety settings", param=name,
                             code="safety_override_forbidden")
        policy = overrides.get("policy", settings.decode_defaults.policy)
        if POLICY_ORDER.index(policy) < POLICY_ORDER.index(settings.min_policy):
            raise ServeError(400, f"safety_policy: {policy!r} is below this server's minimum {settings.min_policy!r}",
                             param="safety_policy", code="safety_override_forbidden")
        sampling = {"max_new_tokens": max_tokens, "temperature": 1.0 if self.temperature is None else self.temperature,
                    "top_p": 1.0 if self.top_p is None else self.top_p, "seed": seed, "stop": self.stop_list,
                    "fused": settings.decode_defaults.fused}
        try:
            return DecodeConfig.model_validate({**settings.decode_defaults.model_dump(), **overrides, **sampling})
        except ValidationError as e:
            err = e.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else None
            param = f"safety_{field}" if field in overrides else field
            raise ServeError(400, f"{param}: {err['msg']}", param=param) from None


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def check_supported(self) -> None:
        if self.logprobs:
            raise ServeError(400, "logprobs: not supported by this server", param="logprobs")
        if self.tools:
            raise ServeError(400, "tools: tool calling is not supported by this server", param="tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ServeError(400, "response_format: only {'type': 'text'} is supported", param="response_format")
        super().check_supported()

    def prompts(self) -> list[list[dict[str, str]]]:
        return [[m.as_engine_message(i) for i, m in enumerate(self.messages)]]


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: int | None = None
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = None

    def check_supported(self) -> None:
        if self.logprobs is not None:
            raise ServeError(400, "logprobs: not supported by this server", param="logprobs")
        if self.echo:
            raise ServeError(400, "echo: not supported by this server", param="echo")
        if self.suffix:
            raise ServeError(400, "suffix: not supported by this server", param="suffix")
        if self.best_of not in (None, 1, self.n):
            raise ServeError(400, "best_of: only best_of == n is supported", param="best_of")
        super().check_supported()

    def prompts(self) -> list[str]:
        # a plain string is one user turn under the chat template (a template-less tokenizer: plain text)
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ModerationRequest(_Wire):
    input: str | list[str] = Field(min_length=1)
    model: str | None = None

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


# ---- responses -------------------------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SafetyInfo(BaseModel):
    """The safety trace of one choice, in the `safety` field the official client keeps as an extra."""

    policy: str
    p_malicious_initial: float | None  # the head on the prompt (None: a model without a head)
    p_malicious_last: float | None  # the head at its last read
    evaluated_steps: list[int]  # generation index of each read; -1 is the prompt's own read
    p_malicious: list[float]  # one per evaluated step
    interventions: list[dict[str, Any]]  # {kind: insert_prefix|fixed_refusal|end_refusal, at, step}
    extra_tokens: int  # generated, then rolled back

    @classmethod
    def from_trace(cls, trace: SafetyTrace, policy: str) -> SafetyInfo:
        ps = trace.p_malicious
        return cls(policy=policy, p_malicious_initial=trace.p_initial, p_malicious_last=ps[-1] if ps else None,
                   evaluated_steps=trace.evaluated_steps, p_malicious=ps,
                   interventions=[{"kind": i.kind, "at": i.at, "step": i.step} for i in trace.interventions],
                   extra_tokens=trace.extra_tokens)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "safecls"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


MALICIOUS_CATEGORY = "malicious"
"""/v1/moderations reports the [CLS] head's P(malicious) as the one category "malicious" (category_scores) and
flags it above the server's threshold. The head is binary: OpenAI's fixed categories (hate, violence, ...) are
not reported rather than reported as 0."""


def moderation_result(p: float, threshold: float) -> dict[str, Any]:
    flagged = p > threshold
    return {"flagged": flagged, "categories": {MALICIOUS_CATEGORY: flagged},
            "category_scores": {MALICIOUS_CATEGORY: p}, "category_applied_input_types": {MALICIOUS_CATEGORY: ["text"]}}
