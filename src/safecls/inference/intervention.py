"""Strategic decoding's edits to a row: roll the reply back to a step and insert the refusal prefix (medium), or end
it with the fixed refusal (high).

Nothing already final is ever taken back: a rollback keeps every token before its point, and streaming has shown
only those (while a trigger is pending, tokens from it on are held). If the kept text already opens the refusal
("... Sorry", "Sorry, I"), only the rest of the prefix is inserted, so the reply neither repeats nor loses words it
has shown ("Sorry Sorry, I cannot ...").

A medium trigger that lands inside the reason of a refusal the reply already wrote (the prefix, then no sentence end
yet) changes nothing: the reply is refusing and explaining, and a second opener there would cut its reason in half
("... because it Sorry, I cannot ..."). A trigger after that sentence has ended (a refusal, then compliance) rolls
back and opens the refusal again as usual.
"""

from __future__ import annotations

from typing import Any

from safecls.data.text_quality import sentence_ends
from safecls.inference.rows import Row
from safecls.inference.strategic import Action
from safecls.inference.trace import Intervention

_MIN_OPENING = 5  # characters of the prefix that must already be written to count as its start ("Sorry")


def refusal_insert(kept: str, prefill_end: str, prefix: str) -> str:
    """The text to insert after `kept` (the reply after the prefill) so that it opens the refusal `prefix`."""
    for k in range(len(prefix), _MIN_OPENING - 1, -1):
        head = prefix[:k]
        if kept.endswith(head):
            start = len(kept) - k
            if start == 0 or not kept[start - 1].isalnum():  # a whole word, not the end of "NotSorry"
                return prefix[k:]
    before = kept or prefill_end
    return prefix if not before or before[-1].isspace() else " " + prefix


def inside_refusal_reason(kept: str, prefix: str) -> bool:
    """True when `kept` has written the refusal `prefix` and the sentence it opened has not ended yet."""
    at = kept.rfind(prefix)
    return at >= 0 and not any(end > at + len(prefix) for end in sentence_ends(kept))


def intervene(r: Row, action: Action, at: int, step: int, tok: Any) -> bool:
    """Roll row `r` back to generation step `at` (>= 0: a prefill is never rolled back into) and apply `action`
    (nothing, for a medium trigger inside the reason of the reply's own refusal). Returns whether the row changed."""
    keep = r.n_prefill + max(at, 0)
    if action == Action.INSERT_PREFIX and inside_refusal_reason(r.continuation(tok, r.tokens[:keep]),
                                                                r.cfg.refusal_prefix):
        return False
    r.trace.extra_tokens += len(r.tokens) - keep
    r.tokens = r.tokens[:keep]
    r.forced = []
    r.text = None
    r.trace.interventions.append(Intervention(action.value, max(at, 0), step))
    kept = r.continuation(tok)
    prefill_end = tok.decode(r.tokens[:r.n_prefill], skip_special_tokens=True)
    if action == Action.FIXED_REFUSAL:
        lead = "" if not (kept or prefill_end) or (kept or prefill_end)[-1].isspace() else " "
        r.finish("content_filter", kept + lead + r.cfg.fixed_refusal)
        return True
    r.forced = tok(refusal_insert(kept, prefill_end, r.cfg.refusal_prefix), add_special_tokens=False)["input_ids"]
    return True
