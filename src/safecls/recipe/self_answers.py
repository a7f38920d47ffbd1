"""Step 1 of the recipe: the base model's own greedy answers to every pool prompt, cached (inference/answers.py).

Benign instructions get the base model's answers as SFT targets (its style, not a stronger model's); the harmful
requests' answers are the compliant texts the pretrain stage teaches the head to read. SmolLM2-135M-Instruct refuses
almost nothing, so its answers to harmful requests are harmful completions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from safecls.inference.answers import CachedAnswer, answer_key, cached_answers
from safecls.inference.config import DecodeConfig
from safecls.io import ResultLog
from safecls.recipe.labels import contrast_pairs, safety_sft_labels
from safecls.recipe.sources import SourcePrompt, read_pool, subset

logger = logging.getLogger(__name__)

# 128 tokens: about 90 words, a complete short answer; longer ones are cut at a sentence (recipe/examples.py).
MAX_NEW_TOKENS = 128


def decode_config(pool: str) -> DecodeConfig:
    return DecodeConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, policy="low")


CONTRAST_POOLS = ("contrast-safe", "contrast-unsafe")
# what the recipe uses of each pool: every LIMA prompt (conversational benign requests: with 250 of them plain SFT
# refused 28% of held-out benign requests, with all 23%; docs/MODEL_CARD.md); the rest of Alpaca and Code Alpaca is
# not needed for a few thousand examples
LIMITS = {"alpaca": 500, "code-alpaca": 400, "lima": 1029}
ALL_POOLS = ("safety-sft", *CONTRAST_POOLS, "alpaca", "code-alpaca", "lima")
# what is answered: the contrast pairs' unsafe twins are not (safety-sft's harmful requests give enough compliant
# answers for the pretrain stage), nor safety-sft's borderline requests (used nowhere)
ANSWERED_POOLS = ("safety-sft", "contrast-safe", "alpaca", "code-alpaca", "lima")


def pool_prompts(data_dir: str | Path, pool: str, limits: dict[str, int] | None = None) -> list[SourcePrompt]:
    """The prompts of a pool: a shared-data file's (at most `limits[pool]`, a seeded subset) or the contrast pairs'."""
    if pool in CONTRAST_POOLS:
        side = pool.removeprefix("contrast-")
        return [SourcePrompt(f"{p.id}/{side}", getattr(p, side), None) for p in contrast_pairs()]
    items = read_pool(data_dir, pool)
    limits = LIMITS if limits is None else limits
    return subset(items, limits[pool]) if pool in limits else items


def _borderline(data_dir: str | Path) -> set[str]:
    labels = safety_sft_labels(read_pool(data_dir, "safety-sft"))
    return {pid for pid, lab in labels.items() if lab.label == "borderline"}


def _cache_tag(model: str) -> str:
    from safecls.model.loading import is_embedded

    # the embedded model's answers are keyed by its portable checkpoint ref, "default", whichever alias names it
    return "base:default" if is_embedded(model) else f"base:{model}"


def self_answers(data_dir: str | Path, cache_file: str | Path, *, model: str = "base",
                 pools: tuple[str, ...] = ANSWERED_POOLS, limits: dict[str, int] | None = None,
                 engine=None, generate: bool = True, batch_size: int = 32) -> dict[str, CachedAnswer]:
    """{prompt id: answer} for every prompt of `pools`, generating what the cache lacks (`generate=False`: only what
    it has)."""
    tag = _cache_tag(model)
    if not generate:
        have = {r.key: r for r in ResultLog(cache_file, CachedAnswer)}
        out = {}
        for pool in pools:
            for p in pool_prompts(data_dir, pool, limits):
                k = answer_key(tag, decode_config(pool), p.prompt)
                if k in have:
                    out[p.id] = have[k]
        return out
    if engine is None:
        from safecls.inference.engine import Engine
        from safecls.model import load_base

        engine = Engine.plain(*load_base(model))
    out: dict[str, CachedAnswer] = {}
    skip = _borderline(data_dir)
    for pool in pools:
        items = [p for p in pool_prompts(data_dir, pool, limits) if p.id not in skip]
        answers = cached_answers(engine.generate, [i.prompt for i in items], cache_file, decode_config(pool),
                                 tag=tag, chunk=4 * batch_size, batch_size=batch_size)
        out.update({i.id: a for i, a in zip(items, answers, strict=True)})
    return out
