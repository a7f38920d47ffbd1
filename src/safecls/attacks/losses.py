"""Batched target loss of whole prompts: the fitness of prompt-level searches (AutoDAN).

For a SafeClsModel the forward is routed as at inference (the [CLS] present, response tokens attending it), so
the loss is the one the defended model really assigns to the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from safecls.attacks._batching import batched
from safecls.model.encoding import Encoded, Prompt, collate, encode_prompt, encode_response
from safecls.model.routing import Kind
from safecls.model.safecls_model import BENIGN, SafeClsModel


def _plain_batch(model: Any, tok: Any, encs: list[Encoded], target_ids: list[int]) -> list[float]:
    device = next(model.parameters()).device
    rows = [e.ids + target_ids for e in encs]
    T = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):  # right padding: positions need no shifting
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).last_hidden_state
    n_t = len(target_ids)
    idx = torch.tensor([[len(e.ids) - 1 + j for j in range(n_t)] for e in encs], device=device)
    h = hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))  # logits only where the loss needs them
    logits = model.get_output_embeddings()(h).float()
    tgt = torch.tensor(target_ids, device=device).expand(len(rows), -1)
    return F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none").mean(1).tolist()


def _safecls_batch(model: SafeClsModel, encs: list[Encoded], target_ids: list[int], head_weight: float) -> list[float]:
    rows = [Encoded(e.ids + target_ids, e.kinds + [int(Kind.RESPONSE)] * len(target_ids)) for e in encs]
    batch = collate(rows, model.cls_token_id, model.tokenizer.pad_token_id, side="left")
    out = model.forward_batch(batch, "sft", lm="response")
    n_t = len(target_ids)
    logits = out.lm_logits.float().reshape(len(rows), n_t, -1)
    tgt = torch.tensor(target_ids, device=logits.device).expand(len(rows), -1)
    loss = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none").mean(1)
    if head_weight > 0:
        loss = loss - head_weight * torch.log_softmax(out.cls_logits.float(), -1)[:, BENIGN]
    return loss.tolist()


def target_losses(model: Any, tokenizer: Any, prompts: Sequence[Prompt], target: str, *, batch_size: int | None = 16,
                  head_weight: float = 0.0) -> list[float]:
    """Mean cross-entropy of `target` as the reply to each prompt (plus head_weight * -log P(benign) for a
    SafeClsModel), one float per prompt. Batches of `batch_size` halve on out-of-memory."""
    tok = model.tokenizer if isinstance(model, SafeClsModel) else tokenizer
    target_ids = encode_response(tok, target, add_eos=False).ids
    encs = [encode_prompt(tok, p) for p in prompts]

    def one(lo: int, hi: int) -> list[float]:
        if isinstance(model, SafeClsModel):
            return _safecls_batch(model, encs[lo:hi], target_ids, head_weight)
        return _plain_batch(model, tok, encs[lo:hi], target_ids)

    with torch.no_grad():
        return batched(one, len(encs), batch_size)
