"""Every prompt the recipe uses, with its label, split, training target and the base model's own answer.

- harmful (label 1): safety-sft requests read as harmful, and the contrast pairs' unsafe twins. Target: the refusal
  prefix + the hand-written reason for that request (one or two sentences; never a loop, never a canned sentence).
- benign (label 0): safety-sft requests read as benign, the contrast pairs' safe prompts, Alpaca, Code Alpaca and
  LIMA instructions. Target: the base model's own answer (its style, not a stronger model's), cut before a loop and
  after the last complete sentence; an answer that is empty, a refusal, or under MIN_ANSWER_CHARS is dropped.
- borderline safety-sft requests are used nowhere.
- Splits by a hash of the prompt (a contrast pair's two sides share one): test 10% (held out of every choice: head
  AUC, benign refusals, NLL), dev 10% (calibration of threshold and tau), train 80%.
- Dropped: any prompt near an evaluation prompt (recipe/overlap.py; a contrast pair goes whole when either side is),
  and prompts that appear twice (the first wins; one under both labels is dropped from both).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safecls.data.refusals import REFUSAL_PREFIX, is_refusal
from safecls.data.text_quality import cut_at_sentence, cut_loop
from safecls.recipe.labels import contrast_pairs, safety_sft_labels
from safecls.recipe.overlap import CONTRAST_COSINE, COSINE, nearest_evaluation, normalise
from safecls.recipe.self_answers import ALL_POOLS, pool_prompts

logger = logging.getLogger(__name__)

MIN_ANSWER_CHARS = 40
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    kind: str  # harmful | benign | contrast-unsafe | contrast-safe
    pool: str
    prompt: str
    label: int
    split: str
    target: str  # the SFT target: a reasoned refusal, or the cleaned base answer
    completion: str | None  # the base model's own answer, cleaned (for label 1: what complying looks like)
    reference: str | None  # the dataset's own answer (benign pools), for held-out NLL


def split_of(group: str, seed: int = 0) -> str:
    h = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest(), 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


def clean_answer(text: str, finish_reason: str) -> str:
    """Cut before the first loop, and after the last complete sentence if the answer ran out of tokens."""
    text = cut_loop(text.strip())
    if finish_reason == "length" or text != text.rstrip(" ,;-"):
        text = cut_at_sentence(text)
    return text.strip()


def refusal(reason: str) -> str:
    reason = reason.strip()
    if reason and reason[-1] not in ".!?":
        reason += "."
    return f"{REFUSAL_PREFIX} {reason}"


def build_examples(data_dir: str | Path, answers: dict[str, Any], *, seed: int = 0, cache: str | Path | None = None,
                   limits: dict[str, int] | None = None) -> tuple[list[Example], dict[str, Any]]:
    """All examples, and counts of everything kept and dropped (and why); `limits`: prompts drawn of each benign
    pool (default self_answers.LIMITS)."""
    stats: Counter = Counter()
    safety = pool_prompts(data_dir, "safety-sft")
    labels = safety_sft_labels(safety)
    rows: list[tuple[str, str, str, str, int, str, str | None]] = []  # id, kind, pool, prompt, label, group, reference
    for p in safety:
        lab = labels.get(p.id)
        if lab is None or lab.label == "borderline":
            stats["borderline_or_unlabelled"] += 1
            continue
        rows.append((p.id, lab.label, "safety-sft", p.prompt, int(lab.label == "harmful"), p.id, None))
    for pair in contrast_pairs():
        rows.append((f"{pair.id}/unsafe", "contrast-unsafe", "contrast", pair.unsafe, 1, pair.id, None))
        rows.append((f"{pair.id}/safe", "contrast-safe", "contrast", pair.safe, 0, pair.id, None))
    for pool in ALL_POOLS[3:]:
        rows += [(p.id, "benign", pool, p.prompt, 0, p.id, p.reference) for p in pool_prompts(data_dir, pool, limits)]
    reasons = {p.id: labels[p.id].reason for p in safety if p.id in labels}
    reasons.update({f"{pair.id}/unsafe": pair.reason for pair in contrast_pairs()})

    nearest = nearest_evaluation([r[3] for r in rows], data_dir, cache=cache)
    limit = [CONTRAST_COSINE if r[2] == "contrast" else COSINE for r in rows]
    near_groups = {r[5] for r, (_, c), lim in zip(rows, nearest, limit, strict=True) if c >= lim}
    near = [(i, c) if r[5] in near_groups else None for r, (i, c) in zip(rows, nearest, strict=True)]
    seen: dict[str, int] = {}
    conflicts = set()
    for r in rows:
        key = normalise(r[3])
        if key in seen and seen[key] != r[4]:
            conflicts.add(key)
        seen.setdefault(key, r[4])
    out, first = [], set()
    for r, hit in zip(rows, near, strict=True):
        rid, kind, pool, prompt, label, group, reference = r
        if hit is not None:
            stats[f"near_evaluation/{kind}"] += 1
            logger.info("dropped %s: near %s (cosine %.2f)", rid, *hit)
            continue
        key = normalise(prompt)
        if key in conflicts or key in first:
            stats["duplicate_or_conflict"] += 1
            continue
        first.add(key)
        ans = answers.get(rid)
        completion = clean_answer(ans.response, ans.finish_reason) if ans is not None else None
        if label == 1:
            target = refusal(reasons[rid])
        else:
            if not completion or len(completion) < MIN_ANSWER_CHARS or is_refusal(completion):
                stats[f"no_usable_answer/{kind}"] += 1
                continue
            target = completion
        out.append(Example(rid, kind, pool, prompt, label, split_of(group, seed), target, completion or None,
                           reference))
    stats.update(f"kept/{e.split}/{e.kind}" for e in out)
    return out, dict(sorted(stats.items()))
