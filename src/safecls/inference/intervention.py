"""Strategic decoding's edits to a row: roll the reply back to a step and insert the refusal prefix (medium), or end
it with the fixed refusal (high).

Nothing already final is ever taken back: a rollback keeps every token before its point, and streaming has shown
only those (while a trigger is pending, tokens from it on are held). If the kept text already opens the refusal
("... Sorry", "Sorry, I"), only the rest of the prefix is inserted, so the reply neither repeats nor loses words it
has shown ("Sorry Sorry, I cannot ...").

A refusal opens a sentence of its own. A trigger's step is where the head first read malicious, often mid-sentence
("... 1/4 of the pomelos. To"): the rollback goes on to the start of that open sentence where none of it has been
shown (always, outside streaming), and where it has been shown (or it is the attacker's prefill) the refusal starts a
new paragraph, never mid-phrase ("To Sorry, I cannot ...").

A medium trigger in a reply that already refuses (its text holds the refusal prefix, written by the model or
inserted) never opens a second refusal. Inside the refusal's reason (the prefix, then no sentence end yet) it changes
nothing: the reply is refusing and explaining, and an opener there would cut its reason in half ("... because it
Sorry, I cannot ..."). After the reason (a refusal that drifts back into the answer: "... because it is illegal.
However, here is how") the reply ends at the refusal's last complete sentence; streaming holds a refusal's open
sentence (safecls.inference.streaming), so nothing shown is taken back.
"""

from __future__ import annotations

from typing import Any

from safecls.data.text_quality import open_sentence, sentence_ends
from safecls.inference.rows import Row
from safecls.inference.strategic import Action
from safecls.inference.trace import END_REFUSAL, Intervention

_MIN_OPENING = 5  # characters of the prefix that must already be written to count as its start ("Sorry")


def _opened(kept: str, prefix: str) -> int:
    """Characters of `prefix` that `kept` already ends with, as a whole word ("... Sorry"); 0 if none."""
    for k in range(len(prefix), _MIN_OPENING - 1, -1):
        if kept.endswith(prefix[:k]):
            start = len(kept) - k
            if start == 0 or not kept[start - 1].isalnum():  # a whole word, not the end of "NotSorry"
                return k
    return 0


def _lead(before: str) -> str:
    """What goes between `before` and a refusal: a paragraph break inside an unfinished sentence, else a space where
    `before` does not end with whitespace already."""
    if before and open_sentence(before) < len(before):
        return "\n\n"
    return "" if not before or before[-1].isspace() else " "


def refusal_insert(kept: str, prefill_end: str, prefix: str) -> str:
    """The text to insert after `kept` (the reply after the prefill) so that it opens the refusal `prefix`."""
    if k := _opened(kept, prefix):
        return prefix[k:]
    return _lead(kept or prefill_end) + prefix


def _sentence_start(r: Row, tok: Any, keep: int, kept: str) -> tuple[int, str]:
    """Roll `keep` (a token count) back to the start of `kept`'s open sentence if none of that sentence has been
    shown; (keep, kept) unchanged where it has been, or there is none."""
    start = open_sentence(kept)
    if start == len(kept) or start < r.emitted:
        return keep, kept
    for k in range(keep - 1, r.n_prefill - 1, -1):
        text = r.continuation(tok, r.tokens[:k])
        if len(text.rstrip()) <= start:  # a token may straddle the sentence end: never keep less than was shown
            return (k, text) if len(text) >= r.emitted else (keep, kept)
    return keep, kept


def refusal_end(text: str, prefix: str) -> int | None:
    """Where a reply that refuses (`text` holds `prefix`) may end: just past the last sentence end after the prefix;
    None while the refusal's first sentence, its reason, is still open (or there is no refusal)."""
    at = text.find(prefix)
    if at < 0:
        return None
    ends = [e for e in sentence_ends(text) if e > at + len(prefix)]
    return max(ends) if ends else None


def intervene(r: Row, action: Action, at: int, step: int, tok: Any) -> int | None:
    """Roll row `r` back to generation step `at` (>= 0: a prefill is never rolled back into), or on to the start of
    its open sentence, and apply `action`; a medium trigger in a reply that already refuses does nothing inside its
    reason and ends the reply after it. Returns the step the row was rolled back to (every cached token from it on is
    gone), None if the row is unchanged."""
    keep = r.n_prefill + max(at, 0)
    prefix = r.cfg.refusal_prefix
    kept = r.continuation(tok, r.tokens[:keep])
    end = None
    if action == Action.INSERT_PREFIX and prefix in kept:  # the reply already refuses
        end = refusal_end(kept, prefix)
        if end is None:
            return None
    elif not (action == Action.INSERT_PREFIX and _opened(kept, prefix)):
        keep, kept = _sentence_start(r, tok, keep, kept)
    cut = keep - r.n_prefill
    r.trace.extra_tokens += len(r.tokens) - keep
    r.tokens = r.tokens[:keep]
    r.forced = []
    r.text = None
    if end is not None:
        r.trace.interventions.append(Intervention(END_REFUSAL, cut, step))
        text = kept[:end].rstrip()
        r.finish("content_filter", text if len(text) >= r.emitted else kept[:r.emitted])  # never less than was shown
        return cut
    r.trace.interventions.append(Intervention(action.value, cut, step))
    prefill_end = tok.decode(r.tokens[:r.n_prefill], skip_special_tokens=True)
    if action == Action.FIXED_REFUSAL:
        r.finish("content_filter", kept + _lead(kept or prefill_end) + r.cfg.fixed_refusal)
        return cut
    r.forced = tok(refusal_insert(kept, prefill_end, prefix), add_special_tokens=False)["input_ids"]
    r.quiet_until = cut + len(r.forced)
    return cut
