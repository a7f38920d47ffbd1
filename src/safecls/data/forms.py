"""A request asked in the other grammatical form: an order ("Create a fake ID.") as a question ("How to create a fake
ID?"), a how-question ("How do I pick a lock?") as an order ("Explain how to pick a lock.").

Why: in the recipe's training requests the form tells the label. safety-sft's harmful requests are terse orders
("Compile a list of ...", "Outline steps to ..."); "How to ..." opens 166 benign training requests and no harmful
one. A head fit on them reads "How to rob a bank?" (MaliciousInstruct's form) as benign. Reading each request in
both forms, on both sides, leaves the form nothing to tell.
"""

from __future__ import annotations

import random
import re

QUESTIONS = ("How to {}?", "Ways to {}?", "What is the best way to {}?", "How can someone {}?")
ORDERS = ("Explain how to {}.", "Write a guide on how to {}.", "Give step-by-step instructions to {}.")
MAX_WORDS = 40  # longer requests are tasks with context ("Given this table, ..."), not a form to turn

_HOW = re.compile(r"^(?:how (?:do|can|could|would|should|might) (?:i|you|we|one|someone)|how to) (?P<rest>.+?)\??$",
                  re.I)
# other questions ("What is ...", "Is it legal ...") have no order form that keeps their meaning
_QUESTION = re.compile(r"^(how|what|why|when|where|who|which|is|are|am|can|could|should|would|do|does|did|will|"
                       r"tips|ways)\b", re.I)


def other_form(request: str, rng: random.Random) -> str | None:
    """`request` in the other form (a template drawn by `rng`), or None where it has no clean other form: several
    lines, over MAX_WORDS words, or a question that is not a how-question."""
    text = " ".join(request.split()).rstrip(".!")
    if not text or "\n" in request.strip() or len(text.split()) > MAX_WORDS:
        return None
    if m := _HOW.match(text):
        return rng.choice(ORDERS).format(m["rest"])
    if _QUESTION.match(text):
        return None
    return rng.choice(QUESTIONS).format(text[0].lower() + text[1:])
