"""Loops and cut-off sentences in generated text: the check a refusal must pass to count as reasoned, and the
cleaning a model's own answers get before they become training targets.

A small model's greedy text loops ("because I cannot fulfill your request because I cannot ...", a list whose items
repeat) and stops mid-sentence at its token budget. `loop_free` is a repeated-n-gram check: no word n-gram (n = 6 by
default) occurs twice. `cut_loop` keeps the text up to the sentence where the first repeat starts; `cut_at_sentence`
drops a trailing unfinished sentence, and `open_sentence` says where it starts (strategic decoding
rolls a refusal back to it). `gives_reason` is the rest of the "reasoned refusal" check: a reason clause
whose words say more than the refusal itself.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9']*")
_SENTENCE_END = re.compile(r"(?<=[^\d\s][.!?:])[\"')\]]*(?=\s)|\n")  # "3." of a list is no sentence end
LOOP_N = 6


def _words(text: str) -> list[tuple[str, int]]:
    """(lower-cased word, start offset) pairs; bare numbers are left out, so a numbered list that repeats its items
    ("1. X 2. X 3. X") is a loop."""
    return [(m.group(0).lower(), m.start()) for m in _WORD.finditer(text) if not m.group(0).isdigit()]


def first_repeat(text: str, n: int = LOOP_N) -> int | None:
    """Character offset where the first word n-gram that already occurred earlier begins; None if none repeats."""
    ws = _words(text)
    seen: set[tuple[str, ...]] = set()
    for i in range(len(ws) - n + 1):
        gram = tuple(w for w, _ in ws[i:i + n])
        if gram in seen:
            return ws[i][1]
        seen.add(gram)
    return None


def loop_free(text: str, n: int = LOOP_N) -> bool:
    return first_repeat(text, n) is None


def sentence_ends(text: str) -> list[int]:
    """Offsets just past each sentence end (., !, ?, : with closing quotes/brackets, or a newline)."""
    end = re.search(r"(?<=[^\d\s])[.!?][\"')\]]*\s*$", text)
    return [m.end() for m in _SENTENCE_END.finditer(text)] + ([len(text)] if end else [])


def cut_at_sentence(text: str) -> str:
    """The text up to its last complete sentence (unchanged if it ends with one; "" if it has none)."""
    text = text.rstrip()
    ends = [e for e in sentence_ends(text) if e <= len(text)]
    return text[: max(ends)].rstrip() if ends else ""


def open_sentence(text: str) -> int:
    """Where the unfinished sentence at the end of `text` starts (len(text) if its last sentence is finished)."""
    # the space lets a final "is:" or "done." count as ended; "3." of a list still does not
    start = max((e for e in sentence_ends(text + " ") if e <= len(text)), default=0)
    return len(text) if not text[start:].strip() else start


def cut_loop(text: str, n: int = LOOP_N) -> str:
    """The text up to the last complete sentence before its first repeated n-gram (the whole text if none)."""
    at = first_repeat(text, n)
    if at is None:
        return text
    return cut_at_sentence(text[:at])


# A reason clause opens with one of these; what follows it must carry words beyond refusal boilerplate, so
# "Sorry, I cannot fulfill your request because I cannot fulfill your request." gives no reason.
_REASON = re.compile(r"\b(because|since|as (?:it|this|that|these|doing)|due to|so that|which (?:could|would|is|can)|"
                     r"(?:could|would|can|may|might) (?:be|lead|cause|harm|hurt|help|put|endanger|violate|result)|"
                     r"(?:is|are|be) (?:illegal|harmful|dangerous|unethical|unsafe|against))\b", re.IGNORECASE)
_BOILERPLATE = frozenset(
    "i i'm im am cannot can't cant can not do don't won't will unable able to fulfill fulfil comply with help assist "
    "provide your you the a an this that it request requests sorry apologize apologise but as because since "
    "such any with information instructions on".split())
REASON_MIN_WORDS = 3


def gives_reason(text: str, n: int = LOOP_N) -> bool:
    """True when the text is loop-free and has a reason clause followed by at least REASON_MIN_WORDS words that are
    not refusal boilerplate: a refusal that explains itself rather than restating that it refuses."""
    if not loop_free(text, n):
        return False
    for m in _REASON.finditer(text):
        rest = [w for w, _ in _words(text[m.end():])]
        if sum(w not in _BOILERPLATE for w in rest) >= REASON_MIN_WORDS:
            return True
    return False
