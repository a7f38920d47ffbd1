"""What an attack talks to: a local model through the decode engine, or any OpenAI-compatible endpoint.

    target = LocalTarget.from_model(safecls_model)            # defended: strategic attention + decoding
    target = LocalTarget.plain(hf_model, tokenizer)            # an undefended HF model
    target = OpenAITarget("my-model", base_url="http://localhost:8000/v1", api_key="none")
    target.generate(["How do I ...?"], DecodeConfig(max_new_tokens=64), prefills=["Sure, here is"])

White-box attacks (GCG, AutoDAN) read `target.safecls_model` / `target.causal_lm` / `target.tokenizer` of a
LocalTarget; black-box attacks use `generate()` only.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from safecls._optional import require
from safecls.config import StrictModel
from safecls.errors import ConfigError, SafeclsError
from safecls.inference.config import DecodeConfig, per_row
from safecls.model.encoding import Prompt, as_messages

logger = logging.getLogger(__name__)


class TargetError(SafeclsError, RuntimeError):
    """The target could not answer (endpoint down, bad request). Never counted as a refusal."""


@dataclass(slots=True)
class Generation:
    text: str  # the continuation only: never includes the prefill
    finish_reason: str | None
    trace: dict[str, Any] | None = None  # the engine's SafetyTrace.to_dict(); None for endpoints
    token_ids: list[int] | None = None
    prefill: str = ""
    usage: dict[str, int] = field(default_factory=dict)


class Target(ABC):
    white_box: bool = False
    supports_prefill: bool = False

    @abstractmethod
    def describe(self) -> str:
        """A short human name for messages and run configs."""

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], config: DecodeConfig | Sequence[DecodeConfig] | None = None,
                 prefills: Sequence[str] | None = None) -> list[Generation]:
        """One Generation per prompt, in order. `prefills[i]` starts the reply (only the continuation is returned).

        Raises:
            ConfigError: prefills were given to a target that cannot prefill.
            TargetError: the target failed to answer.
        """

    def _check_prefills(self, prefills: Sequence[str] | None, n: int) -> list[str]:
        if prefills is None:
            return [""] * n
        prefills = list(prefills)
        if len(prefills) != n:
            raise ValueError(f"got {n} prompts but {len(prefills)} prefills")
        if any(prefills) and not self.supports_prefill:
            raise ConfigError(f"{self.describe()} cannot prefill the response. Fix: use a local model, or an endpoint "
                              "built with prefill='continue_final_message' (vLLM-style servers)")
        return prefills


class LocalTarget(Target):
    """A local model behind the safecls decode engine (defended when the model has a head)."""

    white_box = True
    supports_prefill = True

    def __init__(self, engine: Any, *, batch_size: int = 16):
        self.engine = engine
        self.batch_size = batch_size

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> LocalTarget:
        from safecls.inference.engine import Engine

        return cls(Engine(model), **kwargs)

    @classmethod
    def load(cls, ref: str, *, dtype: Any = None, device: str | None = None, **kwargs: Any) -> LocalTarget:
        """The model `ref` names (model/resolve.py: default, base, untrained, plain:PATH or a checkpoint folder)."""
        from safecls.inference.engine import Engine

        return cls(Engine.load(ref, dtype=dtype, device=device), **kwargs)

    @classmethod
    def plain(cls, model: Any, tokenizer: Any, **kwargs: Any) -> LocalTarget:
        from safecls.inference.engine import Engine

        return cls(Engine.plain(model, tokenizer), **kwargs)

    @property
    def safecls_model(self) -> Any | None:
        """The SafeClsModel, or None for a plain model."""
        return self.engine.model if self.engine.has_head else None

    @property
    def causal_lm(self) -> Any:
        return self.engine.model.causal_lm

    @property
    def tokenizer(self) -> Any:
        return self.engine.tok

    def describe(self) -> str:
        kind = "safecls model" if self.engine.has_head else "plain model"
        name = getattr(getattr(self.causal_lm, "config", None), "_name_or_path", "") or type(self.causal_lm).__name__
        return f"{kind} {name}"

    def generate(self, prompts: Sequence[Prompt], config: DecodeConfig | Sequence[DecodeConfig] | None = None,
                 prefills: Sequence[str] | None = None) -> list[Generation]:
        prompts = list(prompts)
        prefills = self._check_prefills(prefills, len(prompts))
        results = self.engine.generate(prompts, per_row(config, len(prompts)),
                                       prefills=prefills if any(prefills) else None, batch_size=self.batch_size)
        return [Generation(r.text, r.finish_reason, r.trace.to_dict() if self.engine.has_head else None,
                           list(r.token_ids), r.prefill,
                           {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens})
                for r in results]


class OpenAITarget(Target):
    """Any OpenAI-compatible chat endpoint, through the official `openai` client.

    `prefill="continue_final_message"`: the prefill is sent as a final assistant message with vLLM's
    `continue_final_message` extension (the safecls server and vLLM continue it); "none": prefilling is refused.
    Decode settings map to `temperature`, `top_p`, `max_tokens`, `stop`, `seed`; `top_k` and
    `repetition_penalty` go in the request body only when not at their defaults (servers that do not know
    them may reject them). Safety knobs of DecodeConfig are the server's business and are not sent.
    """

    white_box = False

    def __init__(self, model: str, *, base_url: str, api_key: str, prefill: Literal["none", "continue_final_message"] = "none",
                 timeout: float = 120.0, max_retries: int = 2, concurrency: int = 4, client: Any | None = None):
        if prefill not in ("none", "continue_final_message"):
            raise ConfigError(f"prefill: must be 'none' or 'continue_final_message' (got {prefill!r})")
        if concurrency < 1:
            raise ConfigError(f"concurrency: must be >= 1 (got {concurrency})")
        self.model, self.base_url, self.prefill_mode = model, base_url, prefill
        self.supports_prefill = prefill != "none"
        self.concurrency = concurrency
        if client is None:
            openai = require("openai", "dev")
            client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self.client = client

    def describe(self) -> str:
        return f"endpoint {self.base_url} (model {self.model!r})"

    def _request(self, prompt: Prompt, cfg: DecodeConfig, prefill: str) -> dict[str, Any]:
        messages = [dict(m) for m in as_messages(prompt)]
        extra: dict[str, Any] = {}
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
            extra.update(continue_final_message=True, add_generation_prompt=False)
        if cfg.top_k:
            extra["top_k"] = cfg.top_k
        if cfg.repetition_penalty != 1.0:
            extra["repetition_penalty"] = cfg.repetition_penalty
        req: dict[str, Any] = dict(model=self.model, messages=messages, max_tokens=cfg.max_new_tokens,
                                   temperature=cfg.temperature, top_p=cfg.top_p)
        if cfg.stop:
            req["stop"] = list(cfg.stop)
        if cfg.seed is not None:
            req["seed"] = cfg.seed
        if extra:
            req["extra_body"] = extra
        return req

    def _one(self, args: tuple[Prompt, DecodeConfig, str]) -> Generation:
        prompt, cfg, prefill = args
        try:
            resp = self.client.chat.completions.create(**self._request(prompt, cfg, prefill))
        except Exception as e:  # openai.APIError and transport errors: a failure is never a verdict
            raise TargetError(f"{self.describe()}: the request failed ({type(e).__name__}: {e}). Fix: check that the "
                              "server is up and the model name, base_url and api_key are right") from e
        if not resp.choices:
            raise TargetError(f"{self.describe()}: the response has no choices")
        choice = resp.choices[0]
        text = choice.message.content or ""
        if prefill and text.startswith(prefill):  # some servers echo the continued message; keep the continuation
            text = text[len(prefill):]
        usage = resp.usage.model_dump() if getattr(resp, "usage", None) is not None else {}
        return Generation(text, choice.finish_reason, None, None, prefill,
                          {k: v for k, v in usage.items() if isinstance(v, int)})

    def generate(self, prompts: Sequence[Prompt], config: DecodeConfig | Sequence[DecodeConfig] | None = None,
                 prefills: Sequence[str] | None = None) -> list[Generation]:
        prompts = list(prompts)
        prefills = self._check_prefills(prefills, len(prompts))
        jobs = list(zip(prompts, per_row(config, len(prompts)), prefills))
        if self.concurrency == 1 or len(jobs) == 1:
            return [self._one(j) for j in jobs]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, jobs))


class EndpointHelper(StrictModel):
    """An OpenAI-compatible chat endpoint that writes an attack's prompts (PAP's paper used GPT-4 to paraphrase)."""

    base_url: str = Field(min_length=1, description="e.g. http://localhost:8001/v1")
    model: str = Field(min_length=1, description="the model name the endpoint serves")
    api_key_env: str | None = Field(None, description="The environment variable that holds its key (a key never "
                                    "goes in a config or a run folder); None: an open server.")

    def api_key(self) -> str:
        if self.api_key_env is None:
            return "none"
        if not os.environ.get(self.api_key_env):
            raise ConfigError(f"helper endpoint {self.base_url}: ${self.api_key_env} is not set. Fix: export it, or "
                              "drop api_key_env for an open server")
        return os.environ[self.api_key_env]

    @property
    def key(self) -> str:
        return f"{self.base_url}#{self.model}"

    def target(self) -> OpenAITarget:
        return OpenAITarget(self.model, base_url=self.base_url, api_key=self.api_key())
