"""SafeClsModel: any AutoModelForCausalLM + a safety [CLS] token + a classification head."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from safecls.config import StrictModel
from safecls.errors import ModelError
from safecls.model import routing
from safecls.model.encoding import (
    Batch,
    Encoded,
    Prompt,
    check_length,
    collate,
    context_length,
    encode_pair,
    encode_prompt,
    encode_response,
)
from safecls.model.loading import check_causal_lm
from safecls.model.routing import DEFAULT_STAGE, Kind, Stage

logger = logging.getLogger(__name__)

CLS_TOKEN = "<|safety_cls|>"
BENIGN, MALICIOUS = 0, 1
# Which states at [CLS] the head reads, concatenated: FINAL is the last layer's after the final norm (the paper's head);
# k >= 0 is the residual stream after block k (0: the embeddings), as in transformers' hidden_states.
FINAL = -1
HeadLayers = tuple[int, ...]


class LoraOptions(StrictModel):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="peft target_modules; 'all-linear' or names")


@dataclass(slots=True)
class ForwardOut:
    cls_logits: torch.Tensor | None  # (B, 2) at the [CLS] (or EVAL) position; None without [CLS]
    lm_logits: torch.Tensor | None  # (N, V) only where a target exists (memory: never the full (B, T, V))
    lm_targets: torch.Tensor | None  # (N,)
    hidden: torch.Tensor  # (B, T, H) final-layer states


class SafeClsModel(nn.Module):
    """Wraps a causal LM. `base` may be a peft model (LoRA); `head` reads the states at [CLS] of `head_layers`
    (default: the final state alone)."""

    def __init__(self, base: Any, tokenizer: Any, head: nn.Linear, cls_token_id: int, *, stage: Stage = DEFAULT_STAGE,
                 base_ref: str | None = None, with_cls: bool = True, head_layers: HeadLayers = (FINAL,)):
        super().__init__()
        self.base = base
        self.tokenizer = tokenizer
        self.head = head
        self.head_layers: HeadLayers = check_head_layers(head_layers, head.in_features, base)
        self.cls_token_id = cls_token_id
        self.stage: Stage = stage
        self.base_ref = base_ref
        # False: trained without [CLS] (the plain-SFT baseline): it decodes as the plain model it is, and has no head
        self.with_cls = with_cls
        # calibration.json: {"decode": {"threshold", "tau"[, "request_threshold"]}, "moderation": {"threshold"}, then
        # what calibration measured}; None: uncalibrated
        self.calibration: dict | None = None
        self.attention: Literal["dense", "flex"] = "dense"

    @property
    def calibrated(self) -> dict[str, float | int]:
        """The decode defaults calibration chose (threshold, tau, and request_threshold where it chose one); {} when
        uncalibrated."""
        return dict((self.calibration or {}).get("decode", {}))

    @property
    def moderation_threshold(self) -> float | None:
        """The request-only threshold calibration chose for moderation; None when uncalibrated (or calibrated
        before it was stored)."""
        return (self.calibration or {}).get("moderation", {}).get("threshold")

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_base(cls, model: Any, tokenizer: Any, *, lora: LoraOptions | None = None, stage: Stage = DEFAULT_STAGE,
                  head_init_std: float = 0.02, seed: int = 0) -> SafeClsModel:
        """Add `<|safety_cls|>` (embedding initialised to the mean embedding, tied weights kept tied) and a head.

        Raises:
            ModelError: the model is not a causal LM.
        """
        check_causal_lm(model)
        base_ref = getattr(model, "safecls_base_ref", None) or getattr(model, "name_or_path", None)
        cls_id = add_cls_token(model, tokenizer)
        hidden = model.get_input_embeddings().weight.shape[1]
        gen = torch.Generator().manual_seed(seed)
        head = nn.Linear(hidden, 2)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * head_init_std)
            head.bias.zero_()
        head.to(dtype=model.dtype, device=model.device)
        if lora is not None:
            model = apply_lora(model, lora, cls_id)
        return cls(model, tokenizer, head, cls_id, stage=stage, base_ref=str(base_ref) if base_ref else None)

    # ---- plumbing ----------------------------------------------------------------------------------------------
    @property
    def causal_lm(self) -> Any:
        return self.base.get_base_model() if hasattr(self.base, "get_base_model") else self.base

    @property
    def backbone(self) -> Any:
        lm = self.causal_lm
        return getattr(lm, lm.base_model_prefix)

    @property
    def lm_head(self) -> nn.Module:
        return self.causal_lm.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def context_length(self) -> int | None:
        return context_length(self.causal_lm.config)

    @property
    def is_lora(self) -> bool:
        return hasattr(self.base, "peft_config")

    def use_attention(self, attention: Literal["dense", "flex"]) -> None:
        """How `run_backbone` routes: "dense" additive (B, 1, T, T) masks through SDPA (any device), or "flex"
        FlexAttention block masks (sparse: fully masked blocks are skipped; training needs CUDA).

        Raises:
            ModelError: the architecture has no FlexAttention support in transformers.
        """
        if attention not in ("dense", "flex"):
            raise ValueError(f"attention must be 'dense' or 'flex', got {attention!r}")
        try:
            self.causal_lm.set_attn_implementation("flex_attention" if attention == "flex" else "sdpa")
        except (ValueError, ImportError) as e:
            raise ModelError(f"{type(self.causal_lm).__name__} cannot run attention: {attention} ({e}). "
                             "Fix: attention: dense") from e
        self.attention = attention

    def run_backbone(self, kinds: torch.Tensor, stage: Stage, *, input_ids: torch.Tensor | None = None,
                     inputs_embeds: torch.Tensor | None = None, read_prompt: bool = True) -> torch.Tensor:
        """(B, T) -> (B, T, H) final-layer states under the stage's routing (see `use_attention`)."""
        return self.routed(kinds, stage, input_ids=input_ids, inputs_embeds=inputs_embeds,
                           read_prompt=read_prompt).last_hidden_state

    @property
    def reads_layers(self) -> bool:
        """Whether the head reads more than the final state (the backbone must return every layer's)."""
        return self.head_layers != (FINAL,)

    def head_input(self, out: Any, index: Any = ..., layers: HeadLayers | None = None) -> torch.Tensor:
        """What the head reads from a backbone output: the states of `layers` (default `head_layers`) at `index`
        (e.g. (rows, cols) of the [CLS] positions), concatenated; for the final state alone, that state itself."""
        layers = self.head_layers if layers is None else layers
        if layers == (FINAL,):
            return out.last_hidden_state[index]
        return torch.cat([(out.last_hidden_state if k == FINAL else out.hidden_states[k])[index] for k in layers], -1)

    def routed(self, kinds: torch.Tensor, stage: Stage, *, input_ids: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None, read_prompt: bool = True,
               layers: HeadLayers | None = None) -> Any:
        """The backbone's output under the stage's routing (see `use_attention`), with every layer's states when the
        head (or `layers`) reads more than the final one."""
        if self.attention == "flex":
            if not read_prompt:
                raise ModelError("read_prompt=False reads are built as dense masks only. Fix: use_attention('dense')")
            mask = routing.flex_block_mask(kinds, stage)
        else:
            mask = routing.dense_mask(kinds, stage, self.dtype, read_prompt)
        pos = routing.position_ids(kinds, stage)
        every = (self.head_layers if layers is None else layers) != (FINAL,)
        return self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=pos,
                             use_cache=False, output_hidden_states=every)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits with the [CLS] column at -inf: [CLS] is never generated, so neither a loss nor a sampler
        sees it, and training scores the same distribution the engine samples from."""
        out = self.lm_head
        adapter = getattr(out, "token_adapter", None)
        if adapter is not None:
            # LoRA on tied embeddings: peft wraps the output layer to carry the trainable [CLS] row. That row is masked
            # anyway, so read the frozen base weight; otherwise autograd computes a full (V, H) weight gradient just to
            # keep one row of it (~7% of an sft step on SmolLM2).
            base = adapter.base_layer
            logits = F.linear(hidden, base.weight, getattr(base, "bias", None))
        else:
            logits = out(hidden)
        cap = getattr(self.causal_lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        if self.cls_token_id < logits.shape[-1]:
            logits = logits.index_fill(-1, torch.tensor([self.cls_token_id], device=logits.device), float("-inf"))
        return logits

    def forward_batch(self, batch: Batch, stage: Stage | None = None, *, lm: str | None = None,
                      inputs_embeds: torch.Tensor | None = None, read_prompt: bool = True) -> ForwardOut:
        """One routed forward. `lm`: None (no LM logits), "response" (sft targets) or "all" (pretrain targets)."""
        stage = stage or self.stage
        batch = batch.to(self.device)
        out = self.routed(batch.kinds, stage, input_ids=None if inputs_embeds is not None else batch.input_ids,
                          inputs_embeds=inputs_embeds, read_prompt=read_prompt)
        hidden = out.last_hidden_state
        cls_logits = None
        if bool(((batch.kinds == Kind.CLS) | (batch.kinds == Kind.EVAL)).any()):
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            cls_logits = self.head(self.head_input(out, (rows, cls_positions(batch.kinds))))
        lm_logits = lm_targets = None
        if lm is not None:
            sel, lm_targets = lm_target_positions(batch, lm)
            lm_logits = self.lm_logits(hidden[sel])
        return ForwardOut(cls_logits, lm_logits, lm_targets, hidden)

    # ---- classification ----------------------------------------------------------------------------------------
    def encode_for_classify(self, prompt: Prompt, response: str | None) -> Encoded:
        if response is None:
            return encode_prompt(self.tokenizer, prompt)
        enc = encode_pair(self.tokenizer, prompt, None)
        r = encode_response(self.tokenizer, response, add_eos=False)
        return Encoded(enc.ids + r.ids + [self.cls_token_id], enc.kinds + r.kinds + [int(Kind.EVAL)])

    @torch.no_grad()
    def classify(self, prompts: Sequence[Prompt], responses: Sequence[str] | None = None, batch_size: int = 16, *,
                 read_prompt: bool = True) -> list[float]:
        """P(malicious) per prompt, or per (prompt, response) pair (the head read over both, as the engine reads it
        during generation; `read_prompt=False`: over the response alone, with the prompt as context)."""
        feats = self.cls_features(prompts, responses, batch_size, read_prompt=read_prompt)
        return torch.softmax(self.head(feats.to(self.dtype)).float(), -1)[:, MALICIOUS].tolist()

    @torch.no_grad()
    def cls_features(self, prompts: Sequence[Prompt], responses: Sequence[str] | None = None, batch_size: int = 16, *,
                     read_prompt: bool = True, layers: HeadLayers | None = None) -> torch.Tensor:
        """(N, len(layers) H) fp32 states at the [CLS] read of `classify`: what the head reads (`layers` None: the
        head's own `head_layers`), or what a head over other layers would."""
        if not self.with_cls:
            raise ModelError("this model was trained without the [CLS] token (with_cls: false, the plain-SFT "
                             "baseline): its head was never trained. Fix: classify with a model trained with_cls: true")
        if responses is not None and len(responses) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        limit = self.context_length
        encs = []
        for j, prompt in enumerate(prompts):
            e = self.encode_for_classify(prompt, None if responses is None else responses[j])
            check_length(len(e) + 1, limit, f"input {j}")
            encs.append(e)
        layers = self.head_layers if layers is None else check_head_layers(tuple(layers), None, self.base)
        # batches of similar length: left padding costs compute, and a batch's rows never see each other
        order = sorted(range(len(encs)), key=lambda j: len(encs[j]))
        out = torch.zeros(len(encs), len(layers) * self.hidden_size)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            batch = collate([encs[j] for j in idx], self.cls_token_id, self.tokenizer.pad_token_id, side="left")
            batch = batch.to(self.device)
            res = self.routed(batch.kinds, "sft" if responses is None else self.stage, input_ids=batch.input_ids,
                              read_prompt=read_prompt, layers=layers)
            rows = torch.arange(len(idx), device=self.device)
            out[idx] = self.head_input(res, (rows, cls_positions(batch.kinds)), layers).float().cpu()
        return out

    @property
    def hidden_size(self) -> int:
        return _hidden_size(self.causal_lm)

    def set_head(self, head: nn.Linear, layers: HeadLayers) -> None:
        """Replace the head, and the layers it reads (a head re-fit over other layers)."""
        self.head_layers = check_head_layers(tuple(layers), head.in_features, self.base)
        self.head = head

    # ---- losses ------------------------------------------------------------------------------------------------
    def losses(self, batch: Batch, stage: Stage, lambda_cls: float) -> dict[str, torch.Tensor]:
        """pretrain: L_lm + λ·L_cls over all tokens; sft: L_sft on response tokens + λ·L_cls."""
        res = self.forward_batch(batch, stage, lm="all" if stage == "pretrain" else "response")
        lm_loss = F.cross_entropy(res.lm_logits.float(), res.lm_targets) if res.lm_targets.numel() else res.hidden.sum() * 0
        out = {"lm": lm_loss}
        loss = lm_loss
        if res.cls_logits is not None and batch.labels is not None:
            cls_loss = F.cross_entropy(res.cls_logits.float(), batch.labels.to(res.cls_logits.device))
            out["cls"] = cls_loss
            loss = loss + lambda_cls * cls_loss
        out["loss"] = loss
        return out

    # ---- generation (the engine lives a room above; imported at call time) -------------------------------------
    def generate(self, prompts: Sequence[Prompt], **options: Any) -> list[Any]:
        """One GenerationResult per prompt, with `.text` and `.trace`. Options are DecodeConfig fields."""
        from safecls.inference.config import DecodeConfig
        from safecls.inference.engine import Engine

        return Engine(self).generate(list(prompts), DecodeConfig(**options))

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: Any) -> None:
        from safecls.model.checkpoint import save

        save(self, directory)

    @classmethod
    def from_pretrained(cls, directory: Any, dtype: torch.dtype | None = None, device: str | None = None, *,
                        trainable: bool = False) -> SafeClsModel:
        from safecls.model.checkpoint import load

        return load(directory, dtype=dtype, device=device, trainable=trainable)


def _hidden_size(lm: Any) -> int:
    size = getattr(lm.config, "hidden_size", None)
    return int(size) if size else int(lm.get_input_embeddings().weight.shape[1])


def check_head_layers(layers: HeadLayers, in_features: int | None, base: Any) -> HeadLayers:
    """`layers` as given, after checking each exists in `base` and (if given) that the head's width matches.

    Raises:
        ModelError: an unknown layer, a repeated one, or a head of another width.
    """
    lm = base.get_base_model() if hasattr(base, "get_base_model") else base
    n = int(getattr(lm.config, "num_hidden_layers", 0) or 0)
    bad = [k for k in layers if not (k == FINAL or 0 <= k <= n)]
    if not layers or bad or len(set(layers)) != len(layers):
        raise ModelError(f"head layers {list(layers)}: each must be {FINAL} (the final state) or a block index 0..{n}, "
                         f"without repeats. Fix: e.g. [{n * 2 // 3}, {FINAL}]")
    hidden = _hidden_size(lm)
    if in_features is not None and in_features != len(layers) * hidden:
        raise ModelError(f"a head of {in_features} inputs cannot read {len(layers)} layers of {hidden} states. Fix: "
                         f"a head of {len(layers) * hidden} inputs, or layers matching the head")
    return tuple(layers)


def cls_positions(kinds: torch.Tensor) -> torch.Tensor:
    """(B,) the last [CLS]-like position per row: EVAL (a read over a reply), if any, comes after the [CLS]."""
    is_cls = (kinds == Kind.CLS) | (kinds == Kind.EVAL)
    return torch.where(is_cls, torch.arange(kinds.shape[1], device=kinds.device), -1).max(dim=1).values


def lm_target_positions(batch: Batch, lm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) bool of positions whose next token is a target, and those targets (N,).

    "response": next token is RESPONSE (sft); "all": next token is any real token (pretrain LM loss)."""
    k = batch.kinds
    src_ok = (k != Kind.PAD) & (k != Kind.CLS) & (k != Kind.EVAL)
    nxt = torch.zeros_like(k).fill_(int(Kind.PAD))
    nxt[:, :-1] = k[:, 1:]
    if lm == "response":
        tgt_ok = nxt == Kind.RESPONSE
    elif lm == "all":
        tgt_ok = (nxt == Kind.QUERY) | (nxt == Kind.RESPONSE) | (nxt == Kind.TEMPLATE)
    else:
        raise ValueError(f"lm must be 'response' or 'all', got {lm!r}")
    if batch.untargeted is not None:
        tgt_ok[:, :-1] &= ~batch.untargeted[:, 1:]
    sel = src_ok & tgt_ok
    targets = torch.zeros_like(batch.input_ids)
    targets[:, :-1] = batch.input_ids[:, 1:]
    return sel, targets[sel]


def add_cls_token(model: Any, tokenizer: Any) -> int:
    """Add <|safety_cls|> to the tokenizer and resize the embeddings (mean-initialised; ties kept)."""
    if CLS_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([CLS_TOKEN], special_tokens=True)
    cls_id = tokenizer.convert_tokens_to_ids(CLS_TOKEN)
    emb = model.get_input_embeddings()
    if emb.weight.shape[0] <= cls_id:
        old = emb.weight.shape[0]
        # the exact mean, not transformers' random draw around it: the same base gives the same model
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            w = model.get_input_embeddings().weight
            w[old:] = w[:old].mean(dim=0, keepdim=True)
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != w.data_ptr():
                out.weight[old:] = out.weight[:old].mean(dim=0, keepdim=True)
                if getattr(out, "bias", None) is not None:
                    out.bias[old:] = out.bias[:old].min()
    return int(cls_id)


def apply_lora(model: Any, lora: LoraOptions, cls_id: int) -> Any:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                     trainable_token_indices=[cls_id], task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)
