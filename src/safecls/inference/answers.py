"""A model's own answers to many prompts, generated once and cached: resumable, in chunks, keyed by settings.

Training data that keeps a model's style (its own answers to benign instructions) and pretrain-stage texts of
what it would write when it complies (its answers to harmful requests) both need thousands of generations. They
are appended to a JSONL cache after every chunk, keyed by (tag, decode settings, prompt), so a killed run loses
at most one chunk and a rerun generates only what is missing. Prompts are generated in order of length, so a
batch pads little.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from safecls.inference.config import DecodeConfig
from safecls.io import ResultLog
from safecls.model.encoding import Prompt

logger = logging.getLogger(__name__)


class CachedAnswer(BaseModel):
    key: str
    prompt: str | list[dict[str, str]]
    response: str
    finish_reason: str


# What decides the text of an answer from a model without a head (policy low); other fields do not enter the key,
# so a new DecodeConfig field does not invalidate a cache.
_SAMPLING_FIELDS = ("max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "stop",
                    "seed")


def answer_key(tag: str, config: DecodeConfig, prompt: Prompt) -> str:
    fields = {f: getattr(config, f) for f in _SAMPLING_FIELDS if not (f == "seed" and config.temperature == 0)}
    settings = json.dumps({**fields, "policy": config.policy}, sort_keys=True)
    text = prompt if isinstance(prompt, str) else json.dumps(list(prompt), sort_keys=True)
    return hashlib.sha256(f"{tag}\n{settings}\n{text}".encode()).hexdigest()[:24]


def cached_answers(generate: Any, prompts: Sequence[Prompt], cache_file: str | Path, config: DecodeConfig, *,
                   tag: str, chunk: int = 64, batch_size: int = 16) -> list[CachedAnswer]:
    """One answer per prompt, in order. `generate(prompts, config, batch_size=)` is an Engine's or a Target's
    generate; `tag` names the model (it is part of each key, so one cache file can hold several models)."""
    log = ResultLog(cache_file, CachedAnswer)
    have = {r.key: r for r in log}
    keys = [answer_key(tag, config, p) for p in prompts]
    todo = sorted({k: p for k, p in zip(keys, prompts, strict=True) if k not in have}.items(),
                  key=lambda kp: len(kp[1]) if isinstance(kp[1], str) else sum(len(m["content"]) for m in kp[1]))
    if todo:
        logger.info("generating %d answers with %s into %s (%d cached)", len(todo), tag, cache_file, len(prompts) - len(todo))
    t0, done = time.perf_counter(), 0
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        results = generate([p for _, p in part], config, batch_size=batch_size)
        for (k, p), r in zip(part, results, strict=True):
            rec = CachedAnswer(key=k, prompt=p if isinstance(p, str) else list(p), response=r.text,
                               finish_reason=r.finish_reason)
            log.append(rec)
            have[k] = rec
        done += len(part)
        rate = done / (time.perf_counter() - t0)
        logger.info("answers: %d/%d (%.2f prompts/s, about %.0f min left)", done, len(todo), rate,
                    (len(todo) - done) / rate / 60)
    return [have[k] for k in keys]
