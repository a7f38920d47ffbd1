"""StepEvents from rows: text that can no longer change, and each row's result once it is finished.

While a trigger is pending (R3), tokens from its step on may still be rolled back, so they are held; so is the open
sentence after a refusal's reason (a trigger there ends the reply at the refusal's last complete sentence), and an
incomplete UTF-8 character at the end. Every delta therefore extends the text shown so far, and the final text
starts with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from safecls.inference.intervention import refusal_end
from safecls.inference.results import GenerationResult, StepEvent
from safecls.inference.rows import Row


def _result(r: Row, text: str, tok: Any) -> GenerationResult:
    return GenerationResult(text=text, token_ids=list(r.tokens[r.n_prefill:]), finish_reason=r.finish_reason or "stop",
                            trace=r.trace, prompt_tokens=r.prompt_len, completion_tokens=r.generated,
                            prefill=tok.decode(r.tokens[:r.n_prefill], skip_special_tokens=True))


def events(rows: Sequence[Row], tok: Any, deltas: bool = True) -> Iterator[StepEvent]:
    """deltas=False: only final events (generate() needs no streamed text; decoding every row's text at every step
    is the largest per-step cost at batch 16)."""
    for b, r in enumerate(rows):
        if r.reported:
            continue
        last_p = r.trace.evaluations[-1].p_malicious if r.trace.evaluations else None
        if r.finished:
            text = r.text if r.text is not None else r.continuation(tok)
            delta, r.emitted, r.reported = text[r.emitted:], len(text), True
            r.trace.final_rule = r.state.rule
            yield StepEvent(b, delta, last_p, True, r.finish_reason, _result(r, text, tok))
            continue
        if not deltas:
            continue
        safe = r.tokens if r.state.rule != "R3" else r.tokens[: r.n_prefill + max(r.state.s_t, 0)]
        text = r.continuation(tok, safe)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character
            text = text[:-1]
        if (end := refusal_end(text, r.cfg.refusal_prefix)) is not None:
            text = text[:end].rstrip()
        if len(text) > r.emitted:
            delta, r.emitted = text[r.emitted:], len(text)
            yield StepEvent(b, delta, last_p, False, None)
