"""The head itself: AUC of `classify()` on held-out request sets and (prompt, response) pairs, beside the floor a
logistic probe on the frozen base model's hidden states reaches (a [CLS] head that does not beat it is a recipe bug).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from safecls.model.encoding import encode_prompt
from safecls.train.logistic import Logistic, auc

logger = logging.getLogger(__name__)

PROBE_LAYERS = (10, 20, 30)  # SmolLM2-135M has 30 layers; the DESIGN.md floor was measured on these


class SetScore(BaseModel):
    name: str
    auc: float
    n_pos: int
    n_neg: int
    flagged_pos: float  # share of positives above the threshold
    flagged_neg: float  # share of negatives above it
    threshold: float


def score_set(name: str, pos: Sequence[float], neg: Sequence[float], threshold: float) -> SetScore:
    return SetScore(name=name, auc=round(auc(pos, neg), 4), n_pos=len(pos), n_neg=len(neg), threshold=threshold,
                    flagged_pos=round(float(np.mean(np.asarray(pos) > threshold)) if len(pos) else float("nan"), 4),
                    flagged_neg=round(float(np.mean(np.asarray(neg) > threshold)) if len(neg) else float("nan"), 4))


@torch.no_grad()
def base_features(model: Any, tokenizer: Any, prompts: Sequence[Any], layers: Sequence[int] = PROBE_LAYERS,
                  batch_size: int = 16) -> np.ndarray:
    """(N, len(layers) * H) hidden states of a plain causal LM at each prompt's last token."""
    out = []
    for i in range(0, len(prompts), batch_size):
        encs = [encode_prompt(tokenizer, p).ids for p in prompts[i:i + batch_size]]
        T = max(map(len, encs))
        ids = torch.full((len(encs), T), tokenizer.pad_token_id)
        mask = torch.zeros((len(encs), T), dtype=torch.long)
        for b, e in enumerate(encs):  # left padding: the last token is at T - 1 for every row
            ids[b, T - len(e):], mask[b, T - len(e):] = torch.tensor(e), 1
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        out.append(torch.cat([hs[k][:, -1] for k in layers], -1).float().numpy())
    return np.concatenate(out)


class HeadStudy(BaseModel):
    """The head's scores on held-out sets (AUC, and what its threshold flags), and by kind on (prompt, response)."""

    model: str
    threshold: float  # mid-reply: what the pairs are flagged at
    request_threshold: float | None = None  # the request's read at the start: what the request sets are flagged at
    sets: list[SetScore]
    pairs: list[SetScore]  # by kind: P(malicious) of a read over (prompt, response), vs the benign answers


def request_sets(examples: Sequence[dict], xstest: Sequence[Any], advbench: Sequence[Any]) -> dict[str, tuple[list, list]]:
    """{name: (positive prompts, negative prompts)} held out of every choice."""
    test = [e for e in examples if e["split"] == "test"]
    harmful = [e["prompt"] for e in test if e["label"] == 1]
    benign = [e["prompt"] for e in test if e["label"] == 0]
    return {
        "held-out harmful vs benign requests": (harmful, benign),
        "held-out contrast pairs (unsafe vs safe twin)": ([e["prompt"] for e in test if e["kind"] == "contrast-unsafe"],
                                                          [e["prompt"] for e in test if e["kind"] == "contrast-safe"]),
        "XSTest unsafe vs safe": ([x.prompt for x in xstest if x.label == "unsafe"],
                                  [x.prompt for x in xstest if x.label == "safe"]),
        "AdvBench vs held-out benign": ([x.prompt for x in advbench], benign),
    }


def pair_sets(pretrain_test: Sequence[dict]) -> dict[str, tuple[list, list]]:
    """{kind: (harmful (prompt, reply) pairs, benign answer pairs)} from the pretrain corpus's held-out chat records."""
    def pairs(kind: str, label: int) -> list[tuple[str, str]]:
        return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in pretrain_test
                if "messages" in r and r["source"] == kind and r["label"] == label]

    benign = pairs("answer", 0)
    return {kind: (pairs(kind, 1), benign) for kind in ("completion", "nested")}


def head_study(name: str, model: Any, threshold: float, sets: dict[str, tuple[list, list]],
               pairs: dict[str, tuple[list, list]], request_threshold: float | None = None) -> HeadStudy:
    """Requests are flagged at the threshold the engine judges a request's first read by (`request_threshold`, else
    `threshold`), (prompt, reply) reads at the mid-reply `threshold`: the shares a user of the model meets."""
    at_start = threshold if request_threshold is None else request_threshold
    scores = []
    for set_name, (pos, neg) in sets.items():
        p = model.classify(pos + neg)
        scores.append(score_set(set_name, p[: len(pos)], p[len(pos):], at_start))
    by_kind = []
    for kind, (pos, neg) in pairs.items():
        for read_prompt in (True, False):
            items = pos + neg
            p = model.classify([a for a, _ in items], [b for _, b in items], read_prompt=read_prompt)
            label = f"{kind} vs benign answers ({'prompt + reply' if read_prompt else 'reply alone'})"
            by_kind.append(score_set(label, p[: len(pos)], p[len(pos):], threshold))
    return HeadStudy(model=name, threshold=threshold, request_threshold=request_threshold, sets=scores, pairs=by_kind)


def probe_study(base: Any, tokenizer: Any, train: tuple[list, list], sets: dict[str, tuple[list, list]]) -> HeadStudy:
    """The floor: a logistic probe on the frozen base model's hidden states, fit on the recipe's training requests."""
    pos, neg = train
    x = base_features(base, tokenizer, pos + neg)
    probe = Logistic().fit(x, [1] * len(pos) + [0] * len(neg))
    scores = []
    for set_name, (p_items, n_items) in sets.items():
        p = probe.predict(base_features(base, tokenizer, p_items + n_items))
        scores.append(score_set(set_name, p[: len(p_items)], p[len(p_items):], 0.5))
    return HeadStudy(model="frozen-base probe", threshold=0.5, sets=scores, pairs=[])
