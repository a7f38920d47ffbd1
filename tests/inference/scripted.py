"""Scripted stand-ins for the head and the LM of a real engine: the engine's own logic runs; only the numbers the
model would produce are chosen by the test."""

from __future__ import annotations

import torch


class ScriptedHead:
    """Replaces `engine._head_p`: the n-th call returns script[n] for every row (the last value repeats).
    The prompt's forward makes one call for the [CLS] and, with a prefill, one for the prefill read."""

    def __init__(self, engine, script):
        self.script, self.calls = list(script), 0
        self._orig = engine._head_p

    def __call__(self, h):
        p = self._orig(h)
        out = torch.full_like(p, self.script[min(self.calls, len(self.script) - 1)])
        self.calls += 1
        return out


class ForcedTokens:
    """Replaces `engine._next_logits`: at the n-th call (0 = after the prompt), force token script[n] where the script
    has one; otherwise the model's own logits."""

    def __init__(self, engine, script: dict[int, int]):
        self.script, self.calls = script, 0
        self._orig = engine._next_logits

    def __call__(self, hidden):
        logits = self._orig(hidden)
        tok = self.script.get(self.calls)
        self.calls += 1
        if tok is not None:
            logits = torch.full_like(logits, -1e4)
            logits[..., tok] = 0.0
        return logits


def sentence_ends_before(tok, step: int) -> dict[int, int]:
    """A ForcedTokens script: a newline as reply token step - 1, so a trigger at `step` lands at a sentence start and
    the engine rolls back to exactly that step (mid-sentence it goes on to the sentence's start)."""
    (newline,) = tok("\n", add_special_tokens=False)["input_ids"]
    return {step - 1: newline}
