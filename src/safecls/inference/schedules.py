"""Re-classification schedules: at which generation steps the [CLS] is re-evaluated while the row is benign (R2).

- first:      only the evaluation that comes free with the prompt's forward.
- every:      after every generated token.
- periodic:   after tokens period, 2*period, ... (t + 1 divisible by `period`).
- annealing:  after each of the first `anneal_dense` tokens, then at gaps that grow by `anneal_growth`
              (2, 4, 8, ... with the default), never after `anneal_stop` tokens. Attacks that flip a reply
              usually do it early (a prefill, the first sentence), so early density buys most of the recall.
A pending trigger (R3) is checked after every token whatever the schedule, so tau counts quickly.
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
    return frozenset(steps)


def should_evaluate(cfg: DecodeConfig, t: int) -> bool:
    """t: generation index of the newest token (0-based)."""
    if cfg.schedule == "first":
        return False
    if cfg.schedule == "every":
        return True
    if cfg.schedule == "periodic":
        return (t + 1) % cfg.period == 0
    return t in _annealing_steps(cfg.anneal_dense, cfg.anneal_growth, cfg.anneal_stop)
