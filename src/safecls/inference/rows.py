"""One sequence of a decode batch: its tokens, safety state and trace, and the per-row rules of the decode loop
(picking the next token, deciding that the reply ends)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from safecls.inference import strategic
from safecls.inference.config import DecodeConfig
from safecls.inference.sampling import choose
from safecls.inference.trace import SafetyTrace


@dataclass
class Row:
    cfg: DecodeConfig
    prompt_len: int  # real tokens of the prompt (without [CLS])
    n_prefill: int
    prompt_ids: list[int]
    gen: torch.Generator | None
    tokens: list[int] = field(default_factory=list)  # reply tokens: the prefill, then generated and inserted ones
    forced: list[int] = field(default_factory=list)  # inserted tokens still to feed (the refusal prefix)
    quiet_until: int = 0  # the step after an inserted prefix: no read lands inside it (a rollback there would cut it)
    state: strategic.RowState = field(default_factory=strategic.RowState)
    trace: SafetyTrace = field(default_factory=SafetyTrace)
    finished: bool = False
    finish_reason: str | None = None
    text: str | None = None  # the final text, where a stop string or the fixed refusal decides it
    emitted: int = 0  # characters of the continuation already streamed
    reported: bool = False  # the final event has been sent
    steps: int = 0

    @property
    def generated(self) -> int:
        """Tokens after the prefill (generated or inserted)."""
        return len(self.tokens) - self.n_prefill

    def position(self, index: int) -> int:
        """Position id of reply token `index` (0 = the first prefill token, if any)."""
        return self.prompt_len + index

    def continuation(self, tok: Any, tokens: list[int] | None = None) -> str:
        """The text after the prefill."""
        return tok.decode((self.tokens if tokens is None else tokens)[self.n_prefill:], skip_special_tokens=True)

    def finish(self, reason: str, text: str | None = None) -> None:
        self.finished, self.finish_reason = True, reason
        if text is not None:
            self.text = text


def pick(r: Row, logits: torch.Tensor, eos_ids: set[int]) -> int:
    """The next token: an inserted one if any, else sampled (EOS suppressed before min_new_tokens)."""
    if r.forced:
        return r.forced.pop(0)
    if r.generated < r.cfg.min_new_tokens and eos_ids:
        logits = logits.clone()
        logits[list(eos_ids)] = float("-inf")
    seen = None
    if r.cfg.repetition_penalty != 1.0:
        seen = torch.tensor(r.prompt_ids + r.tokens, dtype=torch.long, device=logits.device)
    return choose(logits, r.cfg, seen, r.gen)


def ending(r: Row, token: int, eos_ids: set[int], tok: Any) -> tuple[str, str | None] | None:
    """Called after `token` was appended: (kind, text) if the reply ends with it. kind "eos" (the token is not part of
    the reply), "stop" (a stop string; text is the reply cut before it) or "length"."""
    if token in eos_ids and not r.forced:
        return "eos", None
    if r.cfg.stop:
        text = r.continuation(tok)
        cut = min((i for i in (text.find(s) for s in r.cfg.stop) if i >= 0), default=-1)
        if cut >= 0:
            return "stop", text[:cut]
    # an inserted refusal prefix is finished even past max_new_tokens: a reply never ends inside it
    if (r.generated >= r.cfg.max_new_tokens and not r.forced) or r.steps + 1 >= 2 * r.cfg.max_new_tokens + 64:
        return "length", None
    return None
