"""Utility beside every defence number: the NLL a model assigns to held-out benign reference answers (written by the
datasets' authors, not by any of the models), compared with the base model's.

A defended model that still helps keeps this close to the base (target: at most 1.05x). The NLL is the mean
per-token cross-entropy of the reference answer given its request, teacher-forced through exactly the routing the
model decodes with (a safecls model's reply tokens attend its [CLS]; a plain-SFT checkpoint has none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel

from safecls.model.encoding import collate, encode_pair


class NLL(BaseModel):
    mean: float  # nats per reference token
    tokens: int
    answers: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean)


@torch.no_grad()
def reference_nll(model: Any, tokenizer: Any, prompts: Sequence[Any], references: Sequence[str], *,
                  max_length: int = 384, batch_size: int = 8) -> NLL:
    """Mean NLL per reference token; `model` is a SafeClsModel (either kind) or a plain HF causal LM. References are
    cut to fit `max_length` tokens with their prompt."""
    from safecls.model.safecls_model import SafeClsModel, lm_target_positions

    total, count = 0.0, 0
    safecls = isinstance(model, SafeClsModel)
    with_cls = safecls and model.with_cls
    for i in range(0, len(prompts), batch_size):
        encs = []
        for p, r in zip(prompts[i:i + batch_size], references[i:i + batch_size], strict=True):
            e = encode_pair(tokenizer, p, r)
            encs.append(type(e)(e.ids[:max_length - 1], e.kinds[:max_length - 1]))
        pad = tokenizer.pad_token_id
        if safecls:
            batch = collate(encs, model.cls_token_id, pad, side="right", with_cls=with_cls)
            out = model.forward_batch(batch, "sft", lm="response") if with_cls else None
            if out is not None:
                logits, targets = out.lm_logits, out.lm_targets
            else:  # no [CLS]: the plain model the checkpoint is (its adapters on)
                lm = model.causal_lm
                hidden = lm(input_ids=batch.input_ids, attention_mask=(batch.kinds != 0).long()).logits
                sel, targets = lm_target_positions(batch, "response")
                logits = hidden[sel]
        else:
            batch = collate(encs, 0, pad, side="right", with_cls=False)
            full = model(input_ids=batch.input_ids, attention_mask=(batch.kinds != 0).long()).logits
            sel, targets = lm_target_positions(batch, "response")
            logits = full[sel]
        total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        count += int(targets.numel())
    return NLL(mean=total / max(count, 1), tokens=count, answers=len(prompts))
