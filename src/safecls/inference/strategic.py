"""Strategic attention (rules R1-R3; R4 lives in the routing) and strategic decoding, as a pure per-row state machine.

States: R1 (initially malicious), R2 (benign, watching the latest r2 tokens), R3 (a trigger at S_t is pending
confirmation), DONE (no more evaluations). An evaluation at step t (newest token's generation index) reads the
span returned by `span()`; `after_eval()` updates the state and returns the action for the engine.

Decisions (documented choices where the paper is silent):
- A benign -> malicious trigger at step S_t becomes confirmed after `tau` consecutive malicious evaluations;
  one benign evaluation before that is a false trigger: back to R2, nothing rolled back.
- On confirmation, medium rolls the reply back to its first S_t tokens (the tokens before the trigger step)
  and inserts the refusal prefix there; high replaces the reply with a fixed refusal and stops.
- Rollback never cuts into a prefill the caller supplied: the prefix goes right after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from safecls.inference.config import DecodeConfig


class Action(str, Enum):
    NONE = "none"
    INSERT_PREFIX = "insert_prefix"  # medium: roll back to `at` and insert the refusal prefix
    FIXED_REFUSAL = "fixed_refusal"  # high: replace the reply and stop


@dataclass(slots=True)
class RowState:
    rule: str = "R2"
    s_t: int = -1
    consecutive: int = 0


def initial(cfg: DecodeConfig, p0: float | None) -> tuple[RowState, Action]:
    """State after the prompt's own [CLS] read (p0; None for a model without a head)."""
    if p0 is None or cfg.policy == "low":
        return RowState(rule="DONE"), Action.NONE
    if p0 > cfg.threshold:
        return RowState(rule="R1"), (Action.INSERT_PREFIX if cfg.policy == "medium" else Action.FIXED_REFUSAL)
    return RowState(rule="R2"), Action.NONE


def wants_eval(state: RowState, cfg: DecodeConfig, t: int, scheduled: bool) -> bool:
    if state.rule == "DONE":
        return False
    if state.rule == "R3":
        return True
    if state.rule == "R1":
        return scheduled and t < cfg.r1
    return scheduled


def span(state: RowState, cfg: DecodeConfig, t: int) -> tuple[int, int]:
    """Half-open range of generation indexes the [CLS] reads (besides the prompt's content)."""
    if state.rule == "R1":
        return 0, min(t + 1, cfg.r1)
    if state.rule == "R3":
        return max(0, state.s_t - cfg.r2), min(t, state.s_t + cfg.r3) + 1
    return max(0, t + 1 - cfg.r2), t + 1


def after_eval(state: RowState, cfg: DecodeConfig, t: int, p: float) -> tuple[Action, int]:
    """Returns (action, rollback point). Mutates `state`."""
    malicious = p > cfg.threshold
    if state.rule == "R1":
        if t + 1 >= cfg.r1:
            state.rule = "DONE"
        return Action.NONE, -1
    if state.rule == "R2":
        if not malicious:
            return Action.NONE, -1
        state.rule, state.s_t, state.consecutive = "R3", t, 1
    elif state.rule == "R3":
        if not malicious:  # a false trigger
            state.rule, state.s_t, state.consecutive = "R2", -1, 0
            return Action.NONE, -1
        state.consecutive += 1
    if state.rule == "R3" and state.consecutive >= cfg.tau:
        at = state.s_t
        state.rule = "DONE"
        return (Action.INSERT_PREFIX if cfg.policy == "medium" else Action.FIXED_REFUSAL), at
    return Action.NONE, -1
