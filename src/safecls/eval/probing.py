"""Probing: how sure is a model of its next token over the first N response tokens, per attack setting?

For each prompt the model answers greedily (through the decode engine, so a SafeClsModel answers with its defence
on), then prompt + prefill + answer is run once, teacher-forced, and at each answer position the *top-K next-token
distribution* is taken: the K largest logits, renormalised with a softmax over those K alone. Two numbers per
position:

- entropy   H = -sum_i p_i log p_i over the top K, in nats: 0 (one candidate) .. log K (K equal candidates);
- sharpness = p_1, the top-1 probability of the same renormalised distribution: 1/K (flat) .. 1 (certain).

A curve is the value per position averaged over the prompts whose answer reached that position (an answer that
stops early leaves the later averages). Settings: "direct" (the request as is), "prefill" (the assistant turn starts
with a harmful prefix: the item's target, e.g. AdvBench's "Sure, here is ...", else `DEFAULT_PREFIX`), and "nested"
(the request wrapped in a completion task, `NEST_TEMPLATES`). Works for plain HF models and SafeClsModels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from safecls.attacks.nested import NEST_TEMPLATES, nest  # noqa: F401  (probing's nested setting)
from safecls.data.benchmarks import BenchmarkItem
from safecls.errors import UnknownNameError
from safecls.eval.config import ProbingSpec
from safecls.eval.report import ProbingCurve
from safecls.inference.config import DecodeConfig
from safecls.model.encoding import Encoded, collate, encode_prompt, encode_response
from safecls.model.routing import Kind

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "Sure, here is"

def topk_stats(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V) logits -> (entropy, sharpness), each (...), of the renormalised top-k distribution."""
    top = logits.float().topk(min(k, logits.shape[-1]), dim=-1).values
    logp = torch.log_softmax(top, dim=-1)
    p = logp.exp()
    return -(p * logp).sum(-1), p.max(-1).values


def _engine(model: Any, tokenizer: Any | None) -> Any:
    from safecls.inference.engine import Engine  # probing reads the engine; imported late like the model room does

    if getattr(model, "head", None) is not None and hasattr(model, "classify"):
        return Engine(model)
    if tokenizer is None:
        raise ValueError("probing a plain HF model needs its tokenizer (tokenizer=...)")
    return Engine.plain(model, tokenizer)


@torch.no_grad()
def _answer_logits(engine: Any, prompt: Any, prefill: str, answer: list[int]) -> torch.Tensor:
    """(len(answer), V) next-token logits at each answer position, teacher-forced over prompt + prefill + answer."""
    m, tok = engine.model, engine.tok
    enc = encode_prompt(tok, prompt)
    pre = encode_response(tok, prefill, add_eos=False) if prefill else Encoded([], [])
    full = Encoded(enc.ids + pre.ids + answer, enc.kinds + pre.kinds + [int(Kind.RESPONSE)] * len(answer))
    if engine.has_head:
        batch = collate([full], m.cls_token_id, engine.pad_id, side="left")
        hidden = m.forward_batch(batch, m.stage).hidden[0]
        real = ((batch.kinds[0] != Kind.PAD) & (batch.kinds[0] != Kind.CLS)).nonzero().flatten().to(hidden.device)
        hidden = hidden[real]
    else:
        ids = torch.tensor([full.ids], device=m.device)
        hidden = m.backbone(input_ids=ids, use_cache=False).last_hidden_state[0]
    start = len(enc) + len(pre)  # the answer's first token; it is predicted at the position before it
    logits = m.lm_logits(hidden[start - 1: start - 1 + len(answer)]).float()
    return logits[:, : engine.vocab]


def probe(model: Any, prompts: Sequence[Any], *, tokenizer: Any | None = None, prefills: Sequence[str] | None = None,
          top_k: int = 10, positions: int = 16, decode: DecodeConfig | None = None,
          batch_size: int = 16) -> dict[str, list[float]]:
    """{"entropy": [...], "sharpness": [...]}: per-position means over `prompts` (see the module docstring).

    `model` is a SafeClsModel, or a plain HF causal LM with its `tokenizer`. `decode` sets the defence of the
    greedy answer (its max_new_tokens and temperature are replaced by `positions` and 0)."""
    engine = _engine(model, tokenizer)
    cfg = (decode or DecodeConfig()).model_copy(update={"max_new_tokens": positions, "temperature": 0.0, "stop": []})
    prefills = list(prefills) if prefills is not None else [""] * len(prompts)
    results = engine.generate(list(prompts), cfg, prefills=prefills if any(prefills) else None, batch_size=batch_size)
    sums = {"entropy": [0.0] * positions, "sharpness": [0.0] * positions}
    counts = [0] * positions
    for prompt, prefill, res in zip(prompts, prefills, results, strict=True):
        answer = list(res.token_ids)[:positions]
        if not answer:
            continue
        ent, sharp = topk_stats(_answer_logits(engine, prompt, prefill, answer), top_k)
        for i, (e, s) in enumerate(zip(ent.tolist(), sharp.tolist(), strict=True)):
            sums["entropy"][i] += e
            sums["sharpness"][i] += s
            counts[i] += 1
    n = next((i for i, c in enumerate(counts) if c == 0), positions)
    if n == 0:
        logger.warning("probing: no prompt produced an answer token; the curves are empty")
    return {metric: [v / counts[i] for i, v in enumerate(vals[:n])] for metric, vals in sums.items()}


def setting_inputs(items: Sequence[BenchmarkItem], setting: str, nest_template: str = "story") -> tuple[list[str], list[str]]:
    """(prompts, prefills) of a probing setting: direct, prefill or nested."""
    if setting == "direct":
        return [i.prompt for i in items], [""] * len(items)
    if setting == "prefill":
        return [i.prompt for i in items], [i.target or DEFAULT_PREFIX for i in items]
    if setting == "nested":
        return [nest(i.prompt, nest_template) for i in items], [""] * len(items)
    raise UnknownNameError(f"unknown probing setting {setting!r}; valid: direct, nested, prefill")


def probe_curves(model: Any, items: Sequence[BenchmarkItem], spec: ProbingSpec, *, name: str,
                 tokenizer: Any | None = None, decode: DecodeConfig | None = None,
                 batch_size: int = 16) -> list[ProbingCurve]:
    """One ProbingCurve per setting x metric for model `name` on the first `spec.limit` items."""
    items = list(items)[: spec.limit]
    curves = []
    for setting in spec.settings:
        prompts, prefills = setting_inputs(items, setting, spec.nest)
        stats = probe(model, prompts, tokenizer=tokenizer, prefills=prefills, top_k=spec.top_k,
                      positions=spec.positions, decode=decode, batch_size=batch_size)
        for metric in ("entropy", "sharpness"):
            curves.append(ProbingCurve(model=name, setting=setting, metric=metric, values=stats[metric]))
        logger.info("probing %s/%s: first-token entropy %.3f (max log K = %.3f)", name, setting,
                    stats["entropy"][0] if stats["entropy"] else float("nan"), math.log(spec.top_k))
    return curves
