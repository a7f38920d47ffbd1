"""GCG objectives: the target loss of candidate suffixes, and its gradient with respect to one-hot suffix tokens.

`PlainObjective` (an HF causal LM): the tokens before the suffix never change, so their key/value cache is built
once and shared (expanded, not copied) by every candidate batch.

`SafeClsObjective` (a SafeClsModel): the [CLS] reads the whole query, suffix included, and response tokens attend
the [CLS], routed as the engine routes them at inference (the sft stage). The tokens before the suffix attend
neither the [CLS] nor anything after them, so their cache is built once too; each candidate batch runs the [CLS],
the suffix, the rest of the prompt and the target over it, with the rows of the full sequence's routing mask. With
`head_weight > 0` (adaptive GCG) the objective adds -log P(benign) of the head read over the prompt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from safecls._compat import cache_kwarg
from safecls.attacks._batching import batched
from safecls.attacks.optim_prompt import OptimPrompt
from safecls.model import routing
from safecls.model.encoding import Batch, Encoded, collate
from safecls.model.routing import Kind
from safecls.model.safecls_model import BENIGN


@dataclass(slots=True)
class Scores:
    total: torch.Tensor  # (N,) what GCG minimises
    target: torch.Tensor  # (N,) mean cross-entropy of the target tokens
    p_benign: torch.Tensor | None  # (N,) the head's P(benign) over the prompt; None without a head
    match: torch.Tensor  # (N,) bool: greedy decoding would emit the whole target

    @staticmethod
    def cat(parts: list[Scores]) -> Scores:
        pb = [p.p_benign for p in parts]
        return Scores(torch.cat([p.total for p in parts]), torch.cat([p.target for p in parts]),
                      None if pb[0] is None else torch.cat(pb), torch.cat([p.match for p in parts]))


def _embedding_matrix(emb: nn.Module, vocab: int, device: torch.device) -> torch.Tensor:
    if isinstance(emb, nn.Embedding):
        return emb.weight.detach()
    with torch.no_grad():  # wrapped embeddings (peft trainable tokens): the effective rows
        return emb(torch.arange(vocab, device=device)).detach()


def _target_ce(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, n_target, V), target (n_target,) -> per-row mean CE (N,), exact greedy match (N,)."""
    tgt = target.expand(logits.shape[0], -1)
    ce = F.cross_entropy(logits.float().transpose(1, 2), tgt, reduction="none").mean(dim=1)
    return ce, (logits.argmax(-1) == tgt).all(dim=1)


def _prefix_kv(out: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # renamed after transformers 5.17
    return [(layer.keys, layer.values) for layer in cache.layers]


def _shared_cache(prefix_kv: list[tuple[torch.Tensor, torch.Tensor]], B: int, config: Any) -> Any:
    from transformers import DynamicCache

    # expand() shares the prefix's memory across the batch; the cache concatenates new entries into fresh tensors
    return DynamicCache(ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in prefix_kv],
                        config=config)


class Objective(ABC):
    vocab_size: int
    device: torch.device

    @abstractmethod
    def grad(self, optim_ids: torch.Tensor) -> torch.Tensor:
        """(n_optim,) -> (n_optim, V) gradient of the objective w.r.t. the one-hot suffix."""

    @abstractmethod
    def _scores(self, cands: torch.Tensor) -> Scores:
        """(N, n_optim) -> Scores for one batch."""

    def scores(self, cands: torch.Tensor, batch_size: int | None) -> Scores:
        """Scores of every candidate, in batches of `batch_size` (None: all at once), halving on OOM."""
        with torch.no_grad():
            parts = batched(lambda lo, hi: [self._scores(cands[lo:hi])], cands.shape[0], batch_size)
        return Scores.cat(parts)


class PlainObjective(Objective):
    def __init__(self, model: Any, op: OptimPrompt, *, use_prefix_cache: bool = True):
        self.model = model
        self.backbone = getattr(model, model.base_model_prefix)
        self.lm_head = model.get_output_embeddings()
        self.embed = model.get_input_embeddings()
        self.device = next(model.parameters()).device
        self.vocab_size = self.embed.weight.shape[0]
        self.W = _embedding_matrix(self.embed, self.vocab_size, self.device)
        ids = lambda x: torch.tensor(x, dtype=torch.long, device=self.device)  # noqa: E731
        self.before, self.after, self.target = ids(op.before_ids), ids(op.after_ids), ids(op.target_ids)
        self._ckw = cache_kwarg(type(self.backbone))
        self.prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if use_prefix_cache and len(self.before):
            with torch.no_grad():
                self.prefix_kv = _prefix_kv(self.backbone(input_ids=self.before[None], use_cache=True, **{self._ckw: None}))

    def _logits(self, optim_embeds: torch.Tensor) -> torch.Tensor:
        """(B, n_optim, H) -> target logits (B, n_target, V)."""
        B = optim_embeds.shape[0]
        tail = self.embed(torch.cat([self.after, self.target]))[None].expand(B, -1, -1)
        parts = [optim_embeds, tail]
        kwargs: dict[str, Any] = {}
        if self.prefix_kv is not None:
            kwargs[self._ckw] = _shared_cache(self.prefix_kv, B, self.model.config)
        elif len(self.before):
            parts.insert(0, self.embed(self.before)[None].expand(B, -1, -1))
        embeds = torch.cat(parts, dim=1)
        hidden = self.backbone(inputs_embeds=embeds, use_cache=self.prefix_kv is not None, **kwargs).last_hidden_state
        n_t = len(self.target)
        logits = self.lm_head(hidden[:, -n_t - 1:-1])
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def grad(self, optim_ids: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(optim_ids, self.vocab_size).to(self.W.dtype).requires_grad_(True)
        logits = self._logits((one_hot @ self.W)[None])
        ce, _ = _target_ce(logits, self.target)
        return torch.autograd.grad(ce.sum(), one_hot)[0]

    def _scores(self, cands: torch.Tensor) -> Scores:
        ce, match = _target_ce(self._logits(self.embed(cands)), self.target)
        return Scores(ce, ce, None, match)


class SafeClsObjective(Objective):
    def __init__(self, model: Any, op: OptimPrompt, *, head_weight: float = 0.0, use_prefix_cache: bool = True):
        self.model, self.head_weight = model, head_weight
        self.embed = model.causal_lm.get_input_embeddings()
        self.device = model.device
        self.vocab_size = self.embed.weight.shape[0] if hasattr(self.embed, "weight") else len(model.tokenizer)
        self.W = _embedding_matrix(self.embed, self.vocab_size, self.device)
        n_opt = 1  # a placeholder token; candidates overwrite the slice
        enc = Encoded(op.before_ids + [0] * n_opt + op.after_ids + op.target_ids,
                      op.before_kinds + [op.optim_kind] * n_opt + op.after_kinds + [int(Kind.RESPONSE)] * len(op.target_ids))
        self._op = op
        self._row = collate([enc], model.cls_token_id, model.tokenizer.pad_token_id, side="left")
        self.start = 1 + len(op.before_ids)  # after the [CLS]
        self.target = torch.tensor(op.target_ids, dtype=torch.long, device=self.device)
        self._ckw = cache_kwarg(type(model.backbone))
        self.prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._routes: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        if use_prefix_cache and op.before_ids:
            kinds = self._row.kinds[:, 1:self.start].to(self.device)
            with torch.no_grad():
                out = model.backbone(input_ids=self._row.input_ids[:, 1:self.start].to(self.device),
                                     attention_mask=routing.additive(routing.allowed(kinds, "sft"), model.dtype),
                                     position_ids=routing.position_ids(kinds, "sft"), use_cache=True,
                                     **{self._ckw: None})
            self.prefix_kv = _prefix_kv(out)

    def _batch(self, cands: torch.Tensor) -> Batch:
        n = cands.shape[1]
        row_ids, row_kinds = self._row.input_ids[0], self._row.kinds[0]
        ids = torch.cat([row_ids[: self.start], torch.zeros(n, dtype=torch.long), row_ids[self.start + 1:]]).to(self.device)
        kinds = torch.cat([row_kinds[: self.start], torch.full((n,), self._op.optim_kind), row_kinds[self.start + 1:]])
        B = cands.shape[0]
        ids = ids[None].repeat(B, 1)
        ids[:, self.start:self.start + n] = cands
        return Batch(ids, kinds[None].expand(B, -1).to(self.device))

    def _route(self, kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For a suffix of this length: which positions of the full sequence run over the cached prefix (the [CLS]
        and everything from the suffix on), their rows of the full routing mask with the keys in cache order
        (prefix, then those positions), and their position ids."""
        T = kinds.shape[1]
        if T not in self._routes:
            new = torch.tensor([0, *range(self.start, T)], device=self.device)
            keys = torch.cat([torch.arange(1, self.start, device=self.device), new])
            allow = routing.allowed(kinds[:1], "sft")[:, new][:, :, keys]
            self._routes[T] = (new, routing.additive(allow, self.model.dtype), routing.position_ids(kinds[:1], "sft")[:, new])
        return self._routes[T]

    def _cached_forward(self, batch: Batch, inputs_embeds: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(LM logits at the target (B, n_t, V), head logits (B, 2)) with the prefix from the cache."""
        assert self.prefix_kv is not None
        new, mask, pos = self._route(batch.kinds)
        B = batch.input_ids.shape[0]
        embeds = self.embed(batch.input_ids[:, new]) if inputs_embeds is None else inputs_embeds[:, new]
        out = self.model.backbone(inputs_embeds=embeds, attention_mask=mask.expand(B, -1, -1, -1),
                                  position_ids=pos.expand(B, -1), use_cache=True,
                                  **{self._ckw: _shared_cache(self.prefix_kv, B, self.model.causal_lm.config)},
                                  output_hidden_states=self.model.reads_layers)
        n_t = len(self.target)
        rows = torch.arange(B, device=self.device)
        cls_logits = self.model.head(self.model.head_input(out, (rows, torch.zeros_like(rows))))
        return self.model.lm_logits(out.last_hidden_state[:, -n_t - 1:-1]), cls_logits

    def _forward(self, batch: Batch, inputs_embeds: torch.Tensor | None) -> Scores:
        B, n_t = batch.input_ids.shape[0], len(self.target)
        if self.prefix_kv is not None:
            logits, cls_logits = self._cached_forward(batch, inputs_embeds)
        else:
            out = self.model.forward_batch(batch, "sft", lm="response", inputs_embeds=inputs_embeds)
            logits, cls_logits = out.lm_logits.reshape(B, n_t, -1), out.cls_logits
        ce, match = _target_ce(logits, self.target)
        logp = torch.log_softmax(cls_logits.float(), dim=-1)[:, BENIGN]
        return Scores(ce - self.head_weight * logp, ce, logp.exp(), match)

    def grad(self, optim_ids: torch.Tensor) -> torch.Tensor:
        batch = self._batch(optim_ids[None])
        one_hot = F.one_hot(optim_ids, self.vocab_size).to(self.W.dtype).requires_grad_(True)
        embeds = self.embed(batch.input_ids).detach()
        n = len(optim_ids)
        embeds = torch.cat([embeds[:, : self.start], (one_hot @ self.W)[None], embeds[:, self.start + n:]], dim=1)
        s = self._forward(batch, embeds)
        return torch.autograd.grad(s.total.sum(), one_hot)[0]

    def _scores(self, cands: torch.Tensor) -> Scores:
        return self._forward(self._batch(cands), None)
