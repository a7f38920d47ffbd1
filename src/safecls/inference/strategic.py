"""Strategic attention (which tokens a [CLS] read sees; R4 lives in the routing) and strategic decoding (what a
verdict does), as a pure per-row state machine.

Steps are generation indexes: 0 is the first token the model generates. A caller's prefill is attacker text with
negative indexes (-n .. -1), read right after the prompt and never rolled back into.

States:
- R2 (benign): scheduled reads see the latest `r2` tokens, widened back to the end of the previous read, so no
  stretch of the reply goes unread (a sparse schedule reads longer windows, not fewer tokens).
- R3 (a trigger at S_t is pending): a read after every token, over [S_t - r2, S_t + r3]; `tau` consecutive malicious
  reads confirm it, one benign read is a false trigger (back to R2, nothing undone). A reply that ends while a trigger
  is pending is confirmed: every further read would see the same tokens and agree with the last one.
- DONE: no more reads (the head is ignored, or the reply has ended).

Under medium, reading goes on after strategic decoding has acted (back to R2 once the inserted prefix is written):
a refusal can drift back into the harmful answer ("... because it is illegal. However, here is how"), and the paper's
R1 re-reads a reply that starts with the refusal for that reason. What a confirmed trigger does to a reply that
already refuses is decided on its text (safecls.inference.intervention): inside the refusal's reason nothing, after
it the reply ends at the refusal's last complete sentence.

Policies (what a malicious verdict does):
- low: nothing; the head is not read.
- medium (the paper's): malicious at the start -> the reply starts with the refusal prefix and the model explains;
  a confirmed benign -> malicious switch at S_t -> the reply is rolled back to its first S_t tokens and the refusal
  prefix is inserted there (or, if it already refuses, it ends after its reason). The rollback step returned here is
  where the trigger was; the edit itself may go further back, to the start of an open sentence
  (safecls.inference.intervention).
- high: the first malicious read ends the reply with the fixed refusal, with no tau wait: the text before the read's
  newest token is kept (it may already have been shown), then the fixed refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from safecls.inference.config import DecodeConfig


class Action(str, Enum):
    NONE = "none"
    INSERT_PREFIX = "insert_prefix"  # medium: roll back to `at` and insert the refusal prefix
    FIXED_REFUSAL = "fixed_refusal"  # high: roll back to `at`, append the fixed refusal and stop


@dataclass(slots=True)
class RowState:
    rule: str = "R2"
    s_t: int = 0  # the pending trigger's step (R3)
    consecutive: int = 0
    read_to: int = 0  # every generated step below this has been inside some read window


def _act(cfg: DecodeConfig) -> Action:
    return Action.INSERT_PREFIX if cfg.policy == "medium" else Action.FIXED_REFUSAL


def _after_acting(cfg: DecodeConfig) -> str:
    """medium keeps reading the reply it steered into a refusal; high has ended it."""
    return "R2" if cfg.policy == "medium" else "DONE"


def initial(cfg: DecodeConfig, p0: float | None) -> tuple[RowState, Action]:
    """State after the prompt's own [CLS] read (p0; None for a model without a head)."""
    if p0 is None or cfg.policy == "low":
        return RowState(rule="DONE"), Action.NONE
    if p0 > (cfg.threshold if cfg.request_threshold is None else cfg.request_threshold):
        return RowState(rule=_after_acting(cfg)), _act(cfg)
    return RowState(rule="R2"), Action.NONE


def wants_read(state: RowState, scheduled: bool, ending: bool) -> bool:
    """Read at this step? `ending`: the reply ends with this step (a last read covers its unread tail)."""
    if state.rule == "R3":
        return True
    if state.rule != "R2":
        return False
    return scheduled or ending


def span(state: RowState, cfg: DecodeConfig, t: int) -> tuple[int, int]:
    """Half-open range of generation steps a read at step t sees (besides the prompt, when `read_prompt`)."""
    if state.rule == "R3":
        return state.s_t - cfg.r2, min(t, state.s_t + cfg.r3) + 1
    return min(t + 1 - cfg.r2, state.read_to), t + 1


def after_read(state: RowState, cfg: DecodeConfig, t: int, p: float, hi: int) -> tuple[Action, int]:
    """A read at step t (window ending at `hi`) said P(malicious) = p. Returns (action, rollback step). Mutates."""
    state.read_to = max(state.read_to, hi)
    malicious = p > cfg.threshold
    if state.rule == "R2":
        if not malicious:
            return Action.NONE, -1
        if cfg.policy == "high":
            state.rule = "DONE"
            return Action.FIXED_REFUSAL, max(t, 0)
        state.rule, state.s_t, state.consecutive = "R3", max(t, 0), 1
    elif state.rule == "R3":
        if not malicious:  # a false trigger
            state.rule, state.consecutive = "R2", 0
            return Action.NONE, -1
        state.consecutive += 1
    else:
        return Action.NONE, -1
    if state.consecutive >= cfg.tau:
        return confirm(state, cfg)
    return Action.NONE, -1


def confirm(state: RowState, cfg: DecodeConfig) -> tuple[Action, int]:
    """Act on the pending trigger now (tau reached, or the reply ends)."""
    state.rule, state.consecutive = _after_acting(cfg), 0
    return _act(cfg), state.s_t


def at_end(state: RowState, cfg: DecodeConfig) -> tuple[Action, int]:
    """The reply is ending: a pending trigger is confirmed (its last read was malicious, and no new token follows)."""
    if state.rule == "R3":
        return confirm(state, cfg)
    return Action.NONE, -1
