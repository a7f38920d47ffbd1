"""Strategic decoding's edits to a row: roll the reply back to a step and insert the refusal prefix (medium), or end
it with the fixed refusal (high).

Nothing already final is ever taken back: a rollback keeps every token before its point, and streaming has shown
only those (while a trigger is pending, tokens from it on are held). If the kept text already opens the refusal
("... Sorry", "Sorry, I"), only the rest of the prefix is inserted, so the reply neither repeats nor loses words it
has shown ("Sorry Sorry, I cannot ...").

A medium trigger in a reply that already refuses (its text holds the refusal prefix, written by the model or
inserted) never opens a second refusal. Inside the refusal's reason (the prefix, then no sentence end yet) it changes
nothing: the reply is refusing and explaining, and an opener there would cut its reason in half ("... because it
Sorry, I cannot ..."). After the reason (a refusal that drifts back into the answer: "... because it is illegal.
However, here is how") the reply ends at the refusal's last complete sentence; streaming holds a refusal's open
sentence (safecls.inference.streaming), so nothing shown is taken back.
"""

from __future__ import annotations

from typing import Any

from safecls.data.text_quality import sentence_ends
from safecls.inference.rows import Row
from safecls.inference.strategic import Action
from safecls.inference.trace import END_REFUSAL, Intervention

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


def refusal_end(text: str, prefix: str) -> int | None:
    """Where a reply that refuses (`text` holds `prefix`) may end: just past the last sentence end after the prefix;
    None while the refusal's first sentence, its reason, is still open (or there is no refusal)."""
    at = text.find(prefix)
    if at < 0:
        return None
    ends = [e for e in sentence_ends(text) if e > at + len(prefix)]
    return max(ends) if ends else None


def intervene(r: Row, action: Action, at: int, step: int, tok: Any) -> bool:
    """Roll row `r` back to generation step `at` (>= 0: a prefill is never rolled back into) and apply `action`; a
    medium trigger in a reply that already refuses does nothing inside its reason and ends the reply after it. Returns
    whether the row changed."""
    keep = r.n_prefill + max(at, 0)
    prefix = r.cfg.refusal_prefix
    kept = r.continuation(tok, r.tokens[:keep])
    end = None
    if action == Action.INSERT_PREFIX and prefix in kept:  # the reply already refuses
        end = refusal_end(kept, prefix)
        if end is None:
            return False
    r.trace.extra_tokens += len(r.tokens) - keep
    r.tokens = r.tokens[:keep]
    r.forced = []
    r.text = None
    if end is not None:
        r.trace.interventions.append(Intervention(END_REFUSAL, max(at, 0), step))
        text = kept[:end].rstrip()
        r.finish("content_filter", text if len(text) >= r.emitted else kept[:r.emitted])  # never less than was shown
        return True
    r.trace.interventions.append(Intervention(action.value, max(at, 0), step))
    prefill_end = tok.decode(r.tokens[:r.n_prefill], skip_special_tokens=True)
    if action == Action.FIXED_REFUSAL:
        lead = "" if not (kept or prefill_end) or (kept or prefill_end)[-1].isspace() else " "
        r.finish("content_filter", kept + lead + r.cfg.fixed_refusal)
        return True
    r.forced = tok(refusal_insert(kept, prefill_end, prefix), add_special_tokens=False)["input_ids"]
    r.quiet_until = max(at, 0) + len(r.forced)
    return True
