"""Attention routing: who may attend to whom, for each training stage and for inference spans.

Every rule is written once, in `_allowed`, as elementwise torch ops on (query kind, key kind, query index,
key index). The dense additive mask (eager/SDPA, any device) and the FlexAttention block mask (CUDA)
are both built from it, so the two cannot drift apart.

Sequence layout: `[PAD.. | CLS | tokens..]` for left padding, `[CLS | tokens.. | PAD..]` for right padding.
The `[CLS]` sits before the tokens but, through its mask row, sees tokens after it.

Position ids: every non-[CLS] token keeps the position it has in the base model without [CLS] (count
of real tokens before it), so with [CLS] invisible (pretrain stage) the other logits are exactly the
base model's. The [CLS] takes the position just after the last token of its horizon, as if it were
appended there: a causal model reads a summary token best when it looks back.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

import torch

from safecls._compat import min_value

Stage = Literal["pretrain", "sft"]
DEFAULT_STAGE: Stage = "sft"  # a model is used as the sft stage trains it unless told otherwise


class Kind(IntEnum):
    PAD = 0  # padding, and positions rolled back at inference: nobody attends them
    CLS = 1  # the safety [CLS]
    TEMPLATE = 2  # chat-template / instruction / BOS tokens: rule R4, never attended by [CLS]
    QUERY = 3  # prompt content (user turns, earlier assistant turns); plain text in the pretrain stage
    RESPONSE = 4  # the reply being trained on or generated
    EVAL = 5  # a re-evaluation of [CLS] over prompt + response (inference, classify of pairs); nobody attends it


def _allowed(qk: torch.Tensor, kk: torch.Tensor, qi: torch.Tensor, ki: torch.Tensor, sft: bool,
             read_prompt: bool = True) -> torch.Tensor:
    """The routing rules, elementwise over broadcastable tensors. True = may attend. `read_prompt`: does an EVAL read
    see the prompt's content (False: the response alone, as the engine's reads with read_prompt off)?"""
    q_cls, k_cls = qk == Kind.CLS, kk == Kind.CLS
    k_pad, q_pad = kk == Kind.PAD, qk == Kind.PAD
    same = qi == ki
    content = (kk == Kind.QUERY) | (kk == Kind.RESPONSE)
    # [CLS] row: pretrain sees every real token; sft sees the query only. Template tokens never (R4).
    cls_row = ((kk == Kind.QUERY) if sft else content) | same
    # An EVAL row is a [CLS] read over prompt and response; no other row ever sees it.
    eval_row = (content if read_prompt else (kk == Kind.RESPONSE)) | same
    # Other rows: the base model's causal attention; [CLS] is visible only to sft response tokens.
    k_cls_ok = (qk == Kind.RESPONSE) if sft else torch.zeros_like(q_cls)
    token_row = (ki <= qi) & ~k_pad & (kk != Kind.EVAL) & (~k_cls | k_cls_ok)
    row = torch.where(q_cls, cls_row, torch.where(qk == Kind.EVAL, eval_row, token_row))
    return torch.where(q_pad, same, row)  # a pad row attends itself only: no all-blocked rows


def allowed(kinds: torch.Tensor, stage: Stage, read_prompt: bool = True) -> torch.Tensor:
    """(B, T) kinds -> (B, T, T) bool, True where query (dim 1) may attend key (dim 2)."""
    idx = torch.arange(kinds.shape[1], device=kinds.device)
    return _allowed(kinds[:, :, None], kinds[:, None, :], idx[:, None], idx[None, :], stage == "sft", read_prompt)


def additive(allow: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool (B, Q, K) -> additive float (B, 1, Q, K): 0 = attend, finfo.min = blocked (never -inf)."""
    out = torch.zeros(allow.shape, dtype=dtype, device=allow.device)
    out.masked_fill_(~allow, min_value(dtype))
    return out[:, None]


def dense_mask(kinds: torch.Tensor, stage: Stage, dtype: torch.dtype, read_prompt: bool = True) -> torch.Tensor:
    return additive(allowed(kinds, stage, read_prompt), dtype)


def position_ids(kinds: torch.Tensor, stage: Stage) -> torch.Tensor:
    """(B, T) -> (B, T) long. Tokens: base-model positions. [CLS]: one past the end of its horizon."""
    real = (kinds != Kind.PAD) & (kinds != Kind.CLS) & (kinds != Kind.EVAL)
    pos = torch.cumsum(real.long(), dim=1) - 1
    pos = pos.clamp(min=0)
    horizon = real if stage == "pretrain" else (real & (kinds != Kind.RESPONSE))
    cls_pos = horizon.long().sum(dim=1, keepdim=True).expand_as(pos)
    eval_pos = real.long().sum(dim=1, keepdim=True).expand_as(pos)
    pos = torch.where(kinds == Kind.CLS, cls_pos, pos)
    return torch.where(kinds == Kind.EVAL, eval_pos, pos)


def flex_block_mask(kinds: torch.Tensor, stage: Stage, block_size: int = 128):
    """FlexAttention BlockMask for the same rules (CUDA; CPU works for building it)."""
    from torch.nn.attention.flex_attention import create_block_mask

    sft = stage == "sft"

    def mask_mod(b, h, q_idx, kv_idx):
        return _allowed(kinds[b, q_idx], kinds[b, kv_idx], q_idx, kv_idx, sft)

    B, T = kinds.shape
    return create_block_mask(mask_mod, B, None, T, T, device=kinds.device, BLOCK_SIZE=block_size)


def flex_dense_equivalent(kinds: torch.Tensor, stage: Stage) -> torch.Tensor:
    """The bool (B, T, T) mask that FlexAttention's mask_mod produces, for checking against `allowed`."""
    from torch.nn.attention.flex_attention import create_mask

    sft = stage == "sft"

    def mask_mod(b, h, q_idx, kv_idx):
        return _allowed(kinds[b, q_idx], kinds[b, kv_idx], q_idx, kv_idx, sft)

    B, T = kinds.shape
    return create_mask(mask_mod, B, 1, T, T, device=kinds.device)[:, 0]


# ---- inference: the rows of the decode engine's forwards -----------------------------------------------------

NO_STEP = -(2**31)  # generation index of a cached position that is not a reply token


def inference_allowed(kinds: torch.Tensor, cls_visible: torch.Tensor) -> torch.Tensor:
    """The prompt forward's (B, T, T) mask: the sft routing, with the [CLS] hidden from every other row where
    `cls_visible` (B,) is False (a pretrain-stage model, or a row decoded with the [CLS] invisible)."""
    allow = allowed(kinds, "sft")
    hide = (kinds == Kind.CLS) & ~cls_visible[:, None]  # (B, T) keys to hide
    return allow & ~(hide[:, None, :] & (kinds != Kind.CLS)[:, :, None])


def token_row(kinds: torch.Tensor, live: torch.Tensor, cls_visible: torch.Tensor) -> torch.Tensor:
    """(B, Tc) what a newly generated token sees among the cached positions: every real token, the [CLS] where
    visible, never a read (EVAL) or padding. A row that is not `live` sees nothing (its slot becomes padding)."""
    ok = (kinds != Kind.PAD) & (kinds != Kind.EVAL) & ((kinds != Kind.CLS) | cls_visible[:, None])
    return ok & live[:, None]


def read_row(kinds: torch.Tensor, gen_index: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
             read_prompt: torch.Tensor) -> torch.Tensor:
    """(B, Tc) which cached positions a [CLS] read sees: the prompt's content (where `read_prompt`) plus the reply
    tokens of generation steps in [lo, hi) (strategic attention; a prefill has negative steps). Template tokens and
    padding are never seen (R4).

    Args:
        kinds: (B, Tc) kinds of the cached positions (rolled-back positions are PAD).
        gen_index: (B, Tc) generation step of each cached reply token (NO_STEP elsewhere).
        lo, hi: (B,) half-open range of generation steps.
        read_prompt: (B,) bool.
    """
    resp = (kinds == Kind.RESPONSE) & (gen_index >= lo[:, None]) & (gen_index < hi[:, None])
    return ((kinds == Kind.QUERY) & read_prompt[:, None]) | resp
