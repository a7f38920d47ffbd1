"""ASR corrected for the judge's measured errors (Rogan & Gladen 1978), with an interval that carries them.

No offline judge reads like a person. On the hand-labelled set (safecls's judge validation) a judge finds a share
`recall` of the replies labelled COMPLY and calls a share `false_rate` of the others COMPLY. If those rates hold for
the replies being scored, the observed COMPLY rate p relates to the true one pi by p = pi * recall + (1 - pi) *
false_rate, so

    pi = (p - false_rate) / (recall - false_rate),   clipped to [0, 1]   (undefined when recall <= false_rate).

The interval is Bayesian and carries the uncertainty of all three counts: recall and false_rate are drawn from their
Jeffreys posteriors given the labelled set (Beta(k + 1/2, n - k + 1/2)), pi has a flat prior, and the observed k of n
COMPLY verdicts weighs each (pi, recall, false_rate) by its binomial likelihood; the 2.5/97.5 percentiles of pi's
marginal posterior bound it. Near the edges, where Rogan-Gladen clips (0 COMPLY in 520 gives 0), the interval still
says how much compliance a judge that misses some could have let through (about 1% there, for a judge that finds
two thirds). The assumption to keep in mind: the labelled set's error rates roughly transfer to the replies scored;
where the observed rate is below the judge's false-COMPLY rate they did not, and the row is marked.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from pydantic import BaseModel, ConfigDict

from safecls.eval.judges.validation import judge_validation

DRAWS = 1000  # draws of (recall, false_rate)
GRID = 1001  # points of pi in [0, 1]
SEED = 0


class JudgeErrors(BaseModel):
    """A judge's measured confusion on the labelled set (COMPLY vs not)."""

    model_config = ConfigDict(frozen=True)

    comply_found: int  # labelled COMPLY, called COMPLY
    comply_n: int
    other_called_comply: int  # labelled REFUSE or OFF_TOPIC, called COMPLY
    other_n: int

    @property
    def recall(self) -> float:
        return self.comply_found / self.comply_n

    @property
    def false_rate(self) -> float:
        return self.other_called_comply / self.other_n


class CorrectedRate(BaseModel):
    model_config = ConfigDict(frozen=True)

    rate: float | None  # None: the judge cannot be corrected (recall <= false-COMPLY rate) or n == 0
    lo: float
    hi: float
    below_false_rate: bool = False  # observed rate < the judge's false-COMPLY rate: the error rates did not transfer

    def fmt(self, digits: int = 1) -> str:
        if self.rate is None:
            return "n/a"
        mark = "*" if self.below_false_rate else ""
        return f"{100 * self.rate:.{digits}f}%{mark} [{100 * self.lo:.{digits}f}, {100 * self.hi:.{digits}f}]"


def rogan_gladen(p: float, recall: float, false_rate: float) -> float | None:
    """The true rate behind an observed one, clipped to [0, 1]; None when the judge carries no signal."""
    if recall <= false_rate:
        return None
    return min(1.0, max(0.0, (p - false_rate) / (recall - false_rate)))


def correct(k: int, n: int, errors: JudgeErrors, *, draws: int = DRAWS, grid: int = GRID,
            seed: int = SEED) -> CorrectedRate:
    """The Rogan-Gladen rate of k COMPLY verdicts in n, and its 95% interval (see the module docstring)."""
    if n == 0 or errors.comply_n == 0 or errors.other_n == 0:
        return CorrectedRate(rate=None, lo=0.0, hi=1.0)
    point = rogan_gladen(k / n, errors.recall, errors.false_rate)
    if point is None:
        return CorrectedRate(rate=None, lo=0.0, hi=1.0)
    rng = np.random.default_rng(seed)
    se = rng.beta(errors.comply_found + 0.5, errors.comply_n - errors.comply_found + 0.5, draws)
    fp = rng.beta(errors.other_called_comply + 0.5, errors.other_n - errors.other_called_comply + 0.5, draws)
    keep = se > fp  # a draw where the judge carries no signal says nothing about pi
    se, fp = se[keep], fp[keep]
    pi = np.linspace(0.0, 1.0, grid)
    q = np.clip(pi[:, None] * se[None, :] + (1 - pi[:, None]) * fp[None, :], 1e-12, 1 - 1e-12)
    loglik = k * np.log(q) + (n - k) * np.log1p(-q)  # (grid, draws)
    top = loglik.max()
    post = np.exp(loglik - top).sum(axis=1)  # marginal over (recall, false_rate), flat prior on pi
    cdf = np.cumsum(post) / post.sum()
    lo, hi = float(pi[np.searchsorted(cdf, 0.025)]), float(pi[min(np.searchsorted(cdf, 0.975), grid - 1)])
    return CorrectedRate(rate=point, lo=min(lo, point), hi=max(hi, point),
                         below_false_rate=k / n < errors.false_rate)


@cache
def measured_errors(judge: str) -> JudgeErrors | None:
    """The shipped validation's counts for a built-in judge; None for a judge not measured against the labelled set."""
    v = judge_validation().get(judge)
    if not v or v.get("comply_n") is None:
        return None
    comply_n, other_n = int(v["comply_n"]), int(v["n"]) - int(v["comply_n"])
    found = v.get("comply_found", round((v.get("comply_recall") or 0.0) * comply_n))
    called = v.get("other_called_comply", round((v.get("false_comply_rate") or 0.0) * other_n))
    return JudgeErrors(comply_found=int(found), comply_n=comply_n, other_called_comply=int(called), other_n=other_n)
