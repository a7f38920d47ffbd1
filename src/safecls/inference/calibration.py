"""`safecls calibrate`: choose a checkpoint's decode threshold and tau on a dev split, for a stated false-flag target.

The operating point matters as much as the method (Backtracking, Zhang et al. 2025, flags 12% of safe queries
untuned, 1% tuned). On a labelled dev split, disjoint from every evaluation set:

1. The head reads every dev request once (its free read at the start of decoding). Along a grid of thresholds this
   gives the trade-off curve: benign requests flagged (refused at once) against harmful requests not flagged.
2. Reads during generation flag benign replies too. Among the thresholds that meet the target on requests alone,
   a bisection (`candidates` trials, the highest threshold first) has the engine answer the benign dev requests it
   would not flag at the start (the configured schedule, the largest tau) and count the replies it intervenes in;
   the lowest threshold whose total stays within the target wins. Then the smallest tau that keeps it within.
   With `request_share`, the first read gets a threshold of its own: the lowest on the request curve that flags at
   most that share of the target alone. The first read is one read per reply, mid-reply reads are many, so one
   threshold for both is set by the mid-reply reads and lets through requests the head does tell apart. The
   bisection then runs over the mid-reply threshold (at or above the request one) with the request one fixed.
3. The choice (threshold, tau[, request_threshold]) and everything measured go to the checkpoint's
   calibration.json: every DecodeConfig that leaves threshold or tau unset takes them (generate, chat, serve, eval).
4. Moderation reads each request once and nothing mid-reply, so its threshold is the lowest on the request curve
   that meets the target alone (`request_threshold`): far lower than the decode threshold, which mid-reply reads
   push up. `safecls serve` flags /v1/moderations inputs above it unless given its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from safecls.config import StrictModel
from safecls.inference.config import DecodeConfig

logger = logging.getLogger(__name__)


class CalibrationConfig(StrictModel):
    max_benign_flagged: float = Field(0.03, gt=0, lt=1, description="Target: at most this share of benign dev "
                                                                    "requests refused (at the start or mid-reply).")
    taus: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1, description="tau values tried, smallest "
                                                                                         "(most reactive) first.")
    candidates: int = Field(5, gt=0, description="Thresholds tried with generation (a bisection of the thresholds "
                                                 "that meet the target on requests alone, the highest first).")
    grid: int = Field(199, gt=2, description="Thresholds on the curve: grid points in (0, 1).")
    decode: DecodeConfig = Field(default_factory=lambda: DecodeConfig(max_new_tokens=64),
                                 description="The decode settings calibrated for (schedule, r2, read_prompt, ...).")
    request_share: float | None = Field(None, gt=0, lt=1, description="Give the first read its own threshold, "
                                        "flagging at most this share of the target of benign dev requests; the "
                                        "mid-reply threshold gets the rest. None: one threshold for every read.")
    batch_size: int = Field(16, gt=0)


class CurvePoint(BaseModel):
    threshold: float
    benign_flagged: float  # share of benign dev requests whose first read exceeds the threshold
    harmful_missed: float  # share of harmful dev requests whose first read does not


class Trial(BaseModel):
    threshold: float
    tau: int
    request_threshold: float | None = None
    flagged_at_start: int
    flagged_mid_reply: int
    benign: int

    @property
    def rate(self) -> float:
        return (self.flagged_at_start + self.flagged_mid_reply) / self.benign


class Calibration(BaseModel):
    threshold: float
    tau: int
    request_threshold: float | None = None
    met_target: bool
    target: float
    benign_flagged: float
    harmful_missed: float
    n_benign: int
    n_harmful: int
    curve: list[CurvePoint]
    trials: list[Trial]
    calibrated_for: dict[str, Any] = Field(description="The decode settings it was calibrated for.")

    def for_checkpoint(self) -> dict[str, Any]:
        """calibration.json: the decode defaults and the moderation threshold it chose, then everything measured."""
        decode = {"threshold": self.threshold, "tau": self.tau}
        if self.request_threshold is not None:
            decode["request_threshold"] = self.request_threshold
        return {"decode": decode,
                "moderation": {"threshold": request_threshold(self.curve, self.target)}, **self.model_dump()}


def request_curve(p_benign: Sequence[float], p_harmful: Sequence[float], grid: int) -> list[CurvePoint]:
    thresholds = [round((i + 1) / (grid + 1), 6) for i in range(grid)]
    return [CurvePoint(threshold=t, benign_flagged=sum(p > t for p in p_benign) / max(1, len(p_benign)),
                       harmful_missed=sum(p <= t for p in p_harmful) / max(1, len(p_harmful))) for t in thresholds]


def request_threshold(curve: Sequence[CurvePoint], target: float) -> float:
    """The lowest threshold on the request curve that flags at most `target` of benign requests; the curve's top
    where none does."""
    return next((c.threshold for c in curve if c.benign_flagged <= target), curve[-1].threshold)


def calibrate(model: Any, prompts: Sequence[Any], labels: Sequence[int], config: CalibrationConfig | None = None,
              engine: Any = None) -> Calibration:
    """Choose threshold and tau for `model` on dev `prompts` (label 0 benign, 1 harmful); see the module docstring."""
    from safecls.inference.engine import Engine

    cfg = config or CalibrationConfig()
    engine = engine or Engine(model)
    p = model.classify(list(prompts), batch_size=cfg.batch_size)
    benign = [i for i, y in enumerate(labels) if y == 0]
    pb, ph = [p[i] for i in benign], [p[i] for i, y in enumerate(labels) if y == 1]
    curve = request_curve(pb, ph, cfg.grid)
    feasible = [c for c in curve if c.benign_flagged <= cfg.max_benign_flagged]
    request = None
    if cfg.request_share is not None:
        request = request_threshold(curve, cfg.max_benign_flagged * cfg.request_share)
        feasible = [c for c in curve if c.threshold >= request]
    trials: list[Trial] = []
    taus = sorted(set(cfg.taus))

    def trial(threshold: float, tau: int) -> Trial:
        first = threshold if request is None else request
        start = [i for i in benign if p[i] > first]
        rest = [i for i in benign if p[i] <= first]
        dc = cfg.decode.model_copy(update={"threshold": threshold, "tau": tau, "policy": "medium",
                                           "request_threshold": first})
        res = engine.generate([prompts[i] for i in rest], dc, batch_size=cfg.batch_size) if rest else []
        t = Trial(threshold=threshold, tau=tau, request_threshold=request, flagged_at_start=len(start),
                  benign=len(benign), flagged_mid_reply=sum(r.trace.steered_to_refusal for r in res))
        logger.info("calibration: threshold %.3f (first read %.3f) tau %d: %d + %d of %d benign dev requests flagged",
                    threshold, first, tau, t.flagged_at_start, t.flagged_mid_reply, t.benign)
        trials.append(t)
        return t

    # Flags fall as the threshold rises (more or less: reads mid-reply are not strictly monotone), so bisect the
    # feasible thresholds for the lowest that meets the target, its top first: mid-reply flags can keep every
    # threshold near the request-only optimum over target, where a scan from the bottom would spend every trial.
    chosen: Trial | None = None
    lo, hi, left = 0, len(feasible) - 1, cfg.candidates
    if feasible:
        t = trial(feasible[hi].threshold, taus[-1])
        left -= 1
        chosen = t if t.rate <= cfg.max_benign_flagged else None
    while chosen is not None and lo < hi and left > 0:
        mid = (lo + hi) // 2
        t = trial(feasible[mid].threshold, taus[-1])
        left -= 1
        if t.rate <= cfg.max_benign_flagged:
            chosen, hi = t, mid
        else:
            lo = mid + 1
    if chosen is None:  # nothing met the target: the least flagging point tried, or the top of the grid
        chosen = min(trials, key=lambda t: t.rate) if trials else trial(curve[-1].threshold, taus[-1])
    else:
        for tau in taus[:-1]:  # a more reactive tau, if it stays within the target
            t = trial(chosen.threshold, tau)
            if t.rate <= cfg.max_benign_flagged:
                chosen = t
                break
    first = chosen.threshold if request is None else request
    point = next((c for c in curve if c.threshold == first), None)
    return Calibration(threshold=chosen.threshold, tau=chosen.tau, request_threshold=request,
                       met_target=chosen.rate <= cfg.max_benign_flagged, target=cfg.max_benign_flagged, benign_flagged=chosen.rate,
                       harmful_missed=point.harmful_missed if point else sum(x <= first for x in ph) / max(1, len(ph)),
                       n_benign=len(pb), n_harmful=len(ph), curve=curve, trials=trials,
                       calibrated_for=cfg.decode.model_dump(exclude={"threshold", "tau", "request_threshold"}))
