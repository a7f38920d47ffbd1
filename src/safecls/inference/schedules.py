"""Re-classification schedules: after which generated tokens the [CLS] is read again while the row is benign (R2).

Steps count from the first generated token (a prefill is read once, right after the prompt, under every schedule).

- first:      no reads after the free one of the prompt's forward (and the prefill's, if any).
- every:      after every generated token.
- periodic:   after tokens period, 2*period, ... (t + 1 divisible by `period`).
- annealing:  after each of the first `anneal_dense` tokens, then at gaps that grow by `anneal_growth` (2, 4, 8, ...
              with the default), and a closing read at `anneal_stop` - 1; none after. Attacks that flip a reply
              usually do it early (a prefill, the first sentence), so early density buys most of the recall.

Each read's window reaches back to the end of the previous one (strategic.span), and a reply that ends inside the
schedule's active range gets one last read over its unread tail: up to where the schedule stops, every generated
token is read at least once. A pending trigger (R3) is read after every token whatever the schedule.
"""

from __future__ import annotations

from functools import cache

from safecls.inference.config import DecodeConfig


@cache
def _annealing_steps(dense: int, growth: float, stop: int) -> frozenset[int]:
    steps = set(range(min(dense, stop)))
    t, gap = dense - 1, 2.0
    while True:
        t += max(1, int(gap))
        if t >= stop:
            break
        steps.add(t)
        gap *= growth
    if stop > 0:
        steps.add(stop - 1)
    return frozenset(steps)


def should_read(cfg: DecodeConfig, t: int) -> bool:
    """t: generation index of the newest token (0-based)."""
    if cfg.schedule == "first":
        return False
    if cfg.schedule == "every":
        return True
    if cfg.schedule == "periodic":
        return (t + 1) % cfg.period == 0
    return t in _annealing_steps(cfg.anneal_dense, cfg.anneal_growth, cfg.anneal_stop)


def active(cfg: DecodeConfig, t: int) -> bool:
    """Does the schedule still read at step t (so a reply ending there gets a last read over its tail)?"""
    if cfg.schedule == "first":
        return False
    if cfg.schedule == "annealing":
        return t < cfg.anneal_stop
    return True
