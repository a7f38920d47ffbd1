"""The decode engine: KV cache, left-padded batches, sampling, and the [CLS] re-evaluation fused into decoding.

`generate()` in transformers rejects 4D masks, so the engine owns its loop. Each step feeds one token per row
and, when some row is due for a re-evaluation, an extra EVAL query row whose mask is the strategic-attention
span. The EVAL row's key/value entry is dropped from the cache right after the forward, so no later token can
ever attend a stale [CLS] read. Rolled-back positions are turned into PAD (attended by nobody) and the common
dead tail is cropped, so a rollback truncates the cache exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from safecls._compat import cache_kwarg, cache_length, drop_last, new_cache
from safecls.errors import ContextLengthError, DataError
from safecls.inference import schedules, strategic
from safecls.inference.config import DecodeConfig, per_row
from safecls.inference.sampling import choose, make_generator
from safecls.inference.strategic import Action
from safecls.inference.trace import Evaluation, Intervention, SafetyTrace
from safecls.model import routing
from safecls.model.encoding import Encoded, Prompt, collate, context_length, encode_prompt, encode_response
from safecls.model.routing import Kind

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length" | "content_filter"
    trace: SafetyTrace
    prompt_tokens: int
    completion_tokens: int
    prefill: str = ""


@dataclass(slots=True)
class StepEvent:
    """One row's progress in one step. `delta` is text that can no longer be rolled back."""

    row: int
    delta: str
    p_malicious: float | None
    finished: bool
    finish_reason: str | None
    result: GenerationResult | None = None


@dataclass
class _Row:
    cfg: DecodeConfig
    prompt_len: int  # real tokens of the prompt (without [CLS])
    n_prefill: int
    prompt_ids: list[int]
    gen: torch.Generator | None
    tokens: list[int] = field(default_factory=list)  # response tokens incl. prefill and inserted text
    forced: list[int] = field(default_factory=list)
    state: strategic.RowState = field(default_factory=strategic.RowState)
    trace: SafetyTrace = field(default_factory=SafetyTrace)
    finished: bool = False
    finish_reason: str | None = None
    text: str | None = None  # final text (set when a stop string or fixed refusal decides it)
    emitted: int = 0  # characters of the continuation already streamed
    steps: int = 0
    cancelled: bool = False


class _PlainAdapter:
    """A plain HF causal LM seen through the SafeClsModel interface the engine uses (no head)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.base, self.tokenizer = model, tokenizer
        self.head, self.cls_token_id, self.stage = None, None, "sft"
        self.causal_lm = model
        self.backbone = getattr(model, model.base_model_prefix)
        self.context_length = context_length(model.config)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.causal_lm.get_output_embeddings()(hidden)

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.base.parameters()).dtype


class Engine:
    def __init__(self, model: Any):
        """`model`: a SafeClsModel. For a plain HF model use `Engine.plain(model, tokenizer)`."""
        self.model = model
        self.tok = model.tokenizer
        self._ckw = cache_kwarg(type(model.backbone))
        eos = {self.tok.eos_token_id} if self.tok.eos_token_id is not None else set()
        gen_eos = getattr(getattr(model.causal_lm, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else ({gen_eos} if gen_eos is not None else set())
        self.eos_ids = eos
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else next(iter(eos), 0)
        self.vocab = len(self.tok)

    @classmethod
    def plain(cls, model: Any, tokenizer: Any) -> Engine:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(_PlainAdapter(model, tokenizer))

    @property
    def has_head(self) -> bool:
        return self.model.head is not None

    # ---- public API ----------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], config: DecodeConfig | Sequence[DecodeConfig] | None = None,
                 prefills: Sequence[str] | None = None, batch_size: int = 16) -> list[GenerationResult]:
        """One result per prompt, in order. Prompts are split into batches of `batch_size`."""
        prompts = list(prompts)
        configs = per_row(config, len(prompts))
        results: list[GenerationResult | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc="generate", unit="seq", disable=None if len(prompts) > batch_size else True,
                   leave=False)
        for i in range(0, len(prompts), batch_size):
            sl = slice(i, i + batch_size)
            pre = list(prefills)[sl] if prefills else [""] * len(prompts[sl])
            with torch.no_grad():
                for ev in self._run(prompts[sl], configs[sl], pre, None, deltas=False):
                    if ev.finished:
                        results[i + ev.row] = ev.result
                        bar.update(1)
        bar.close()
        return results  # type: ignore[return-value]

    def stream(self, prompts: Sequence[Prompt], config: DecodeConfig | Sequence[DecodeConfig] | None = None,
               prefills: Sequence[str] | None = None, cancelled: Any = None) -> Iterator[StepEvent]:
        """Yields StepEvents as tokens become final. `cancelled(row) -> bool` is polled each step."""
        configs = per_row(config, len(prompts))
        with torch.no_grad():
            yield from self._run(list(prompts), configs, list(prefills) if prefills else [""] * len(prompts), cancelled)

    # ---- internals -----------------------------------------------------------------------------------------------
    def _encode(self, prompts: list[Prompt], prefills: list[str], configs: list[DecodeConfig]) -> list[Encoded]:
        encs = []
        limit = self.model.context_length
        for i, (p, pre, cfg) in enumerate(zip(prompts, prefills, configs, strict=True)):
            if (isinstance(p, str) and not p.strip()) or (not isinstance(p, str) and not any(m.get("content") for m in p)):
                raise DataError(f"prompt {i}", "is empty", fix="pass a non-empty prompt")
            e = encode_prompt(self.tok, p)
            if pre:
                r = encode_response(self.tok, pre, add_eos=False)
                e = Encoded(e.ids + r.ids, e.kinds + r.kinds)
            need = len(e) + (1 if self.has_head else 0) + cfg.max_new_tokens
            if limit is not None and need > limit:
                raise ContextLengthError(
                    f"prompt {i} has {len(e)} tokens and asks for {cfg.max_new_tokens} new ones: {need} > the model's "
                    f"context length {limit}. Fix: shorten the prompt or lower max_new_tokens"
                )
            encs.append(e)
        return encs

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.model.backbone(input_ids=input_ids, attention_mask=routing.additive(mask, self.model.dtype),
                                  position_ids=pos, use_cache=True, **{self._ckw: cache})
        return out.last_hidden_state

    def _next_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.lm_logits(hidden).float()
        if self.has_head:
            logits[..., self.model.cls_token_id] = float("-inf")  # the [CLS] is never generated
        return logits[..., : self.vocab] if logits.shape[-1] > self.vocab else logits

    def _p(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model.head(h).float(), -1)[..., 1]

    def _run(self, prompts, configs, prefills, cancelled, deltas: bool = True) -> Iterator[StepEvent]:
        """deltas=False: only final events (generate() needs no streamed text, and decoding every row's text at
        every step is the largest per-step overhead at batch 16)."""
        dev = self.model.device
        encs = self._encode(prompts, prefills, configs)
        B = len(encs)
        batch = collate(encs, self.model.cls_token_id or 0, self.pad_id, side="left", with_cls=self.has_head)
        kinds, ids = batch.kinds.to(dev), batch.input_ids.to(dev)
        gen_index = torch.full_like(kinds, -1)
        rows: list[_Row] = []
        for b, (e, cfg) in enumerate(zip(encs, configs, strict=True)):
            n_pre = sum(1 for k in e.kinds if k == Kind.RESPONSE)
            r = _Row(cfg=cfg, prompt_len=len(e) - n_pre, n_prefill=n_pre, prompt_ids=e.ids[: len(e) - n_pre],
                     gen=make_generator(cfg, dev), tokens=e.ids[len(e) - n_pre:])
            rows.append(r)
            if n_pre:
                resp = (kinds[b] == Kind.RESPONSE).nonzero().flatten()
                gen_index[b, resp] = torch.arange(n_pre, device=dev)
        cls_visible = [self._cls_visible(r.cfg) for r in rows]
        vis = torch.tensor(cls_visible, dtype=torch.bool, device=dev)

        # prefill: the prompt's forward, with the [CLS] reading the prompt's content only (R1/R2 start)
        allow = routing.allowed(kinds, "sft")
        for b in range(B):
            if not cls_visible[b]:
                allow[b, :, kinds[b] == Kind.CLS] &= (kinds[b] == Kind.CLS)[:, None]
        pos = routing.position_ids(kinds, "sft")
        cache = new_cache(self.model.causal_lm)
        hidden = self._forward(ids, allow, pos, cache)
        logits = self._next_logits(hidden[:, -1])
        next_pos = torch.tensor([r.prompt_len + r.n_prefill for r in rows], device=dev)
        p0 = self._p(hidden[torch.arange(B, device=dev), batch.cls_index.to(dev)]) if self.has_head else None
        pending: list[int | None] = [None] * B
        for b, r in enumerate(rows):
            pb = None if p0 is None else float(p0[b])
            r.trace.p_initial = pb
            r.state, action = strategic.initial(r.cfg, pb)
            if pb is not None:
                r.trace.evaluations.append(Evaluation(-1, pb, "prompt", (0, 0)))
            if action != Action.NONE:
                self._intervene(r, action, at=r.n_prefill, step=-1)
        for b, r in enumerate(rows):
            if not r.finished:
                pending[b] = self._pick(r, logits[b])
        yield from self._emit(rows, deltas)

        while not all(r.finished for r in rows):
            if cancelled is not None:
                for b, r in enumerate(rows):
                    if not r.finished and cancelled(b):
                        r.cancelled, r.finished, r.finish_reason = True, True, "cancelled"
            step_tokens = torch.full((B,), self.pad_id, dtype=torch.long, device=dev)
            live = torch.zeros(B, dtype=torch.bool, device=dev)
            for b, r in enumerate(rows):
                if not r.finished and pending[b] is not None:
                    step_tokens[b], live[b] = pending[b], True
                    r.tokens.append(pending[b])
            if not bool(live.any()):
                break
            t_row = [len(r.tokens) - 1 for r in rows]
            due = [bool(live[b]) and self.has_head and strategic.wants_eval(
                r.state, r.cfg, t_row[b], schedules.should_evaluate(r.cfg, t_row[b])) for b, r in enumerate(rows)]
            any_due = any(due)
            # the new token's slot
            new_kind = torch.where(live, int(Kind.RESPONSE), int(Kind.PAD))
            new_gen = torch.where(live, torch.tensor(t_row, device=dev), -1)
            kinds_ext = torch.cat([kinds, new_kind[:, None]], 1)
            gen_ext = torch.cat([gen_index, new_gen[:, None]], 1)
            Tc = kinds.shape[1]
            tok_row = (kinds != Kind.PAD) & (kinds != Kind.EVAL) & ((kinds != Kind.CLS) | vis[:, None])
            tok_row = torch.cat([tok_row & live[:, None], torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
            spans = [strategic.span(r.state, r.cfg, t_row[b]) if due[b] else (0, 0) for b, r in enumerate(rows)]
            if any_due:
                lo = torch.tensor([s[0] for s in spans], device=dev)
                hi = torch.tensor([s[1] for s in spans], device=dev)
                ev_row = routing.cls_span(kinds_ext, gen_ext, lo, hi)
                ev_row = torch.cat([ev_row, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
            if any_due and rows[0].cfg.fused:
                mask = torch.zeros(B, 2, Tc + 2, dtype=torch.bool, device=dev)
                mask[:, 0, : Tc + 1] = tok_row
                mask[:, 1] = ev_row
                inp = torch.stack([step_tokens, torch.full_like(step_tokens, self.model.cls_token_id)], 1)
                pos = torch.stack([next_pos, next_pos + 1], 1)
                hidden = self._forward(inp, mask, pos, cache)
                drop_last(cache, 1)
                h_tok, h_eval = hidden[:, 0], hidden[:, 1]
            else:
                mask = tok_row[:, None, :]
                hidden = self._forward(step_tokens[:, None], mask, next_pos[:, None], cache)
                h_tok, h_eval = hidden[:, 0], None
                if any_due:  # the separate pass, for comparison: the same EVAL row on its own
                    m2 = ev_row[:, None, :]
                    inp = torch.full((B, 1), self.model.cls_token_id, dtype=torch.long, device=dev)
                    h_eval = self._forward(inp, m2, (next_pos + 1)[:, None], cache)[:, 0]
                    drop_last(cache, 1)
            kinds, gen_index = kinds_ext, gen_ext
            next_pos = next_pos + live.long()
            logits = self._next_logits(h_tok)
            p_eval = self._p(h_eval) if h_eval is not None else None
            for b, r in enumerate(rows):
                if not live[b]:
                    continue
                r.steps += 1
                acted = False
                if due[b]:
                    p = float(p_eval[b])
                    rule = r.state.rule
                    action, at = strategic.after_eval(r.state, r.cfg, t_row[b], p)
                    r.trace.evaluations.append(Evaluation(t_row[b], p, rule, spans[b]))
                    if action != Action.NONE:
                        at = self._before_refusal_opening(r, max(at, r.n_prefill))
                        dead = gen_index[b] >= at
                        kinds[b, dead] = int(Kind.PAD)
                        gen_index[b, dead] = -1
                        next_pos[b] = r.prompt_len + at
                        self._intervene(r, action, at=at, step=t_row[b])
                        acted = True
                        if r.finished:
                            pending[b] = None
                            continue
                if not acted and self._check_stop(r, int(step_tokens[b])):
                    pending[b] = None
                    continue
                pending[b] = self._pick(r, logits[b])
            kinds, gen_index = self._crop_dead_tail(kinds, gen_index, cache)
            yield from self._emit(rows, deltas)
        yield from self._emit(rows, deltas)  # rows finished by cancellation alone still get their final event

    # ---- row helpers -------------------------------------------------------------------------------------------------
    def _cls_visible(self, cfg: DecodeConfig) -> bool:
        if not self.has_head:
            return False
        return cfg.cls_visible if cfg.cls_visible is not None else self.model.stage == "sft"

    def _pick(self, r: _Row, logits: torch.Tensor) -> int:
        if r.forced:
            return r.forced.pop(0)
        if len(r.tokens) - r.n_prefill < r.cfg.min_new_tokens and self.eos_ids:
            logits = logits.clone()
            logits[list(self.eos_ids)] = float("-inf")
        seen = None
        if r.cfg.repetition_penalty != 1.0:
            seen = torch.tensor(r.prompt_ids + r.tokens, dtype=torch.long, device=logits.device)
        return choose(logits, r.cfg, seen, r.gen)

    def _before_refusal_opening(self, r: _Row, at: int) -> int:
        """Move a rollback point back over generated tokens that already open the refusal ("Sorry", "Sorry, I"), so
        the inserted refusal prefix does not repeat them ("Sorry Sorry, I cannot ...")."""
        opening = r.cfg.refusal_prefix.strip()
        best = at
        for j in range(at - 1, r.n_prefill - 1, -1):  # a word may span tokens ("So", "rr", "y"): try every start
            text = self.tok.decode(r.tokens[j:at], skip_special_tokens=True).strip()
            if len(text) > len(opening):
                break
            if text and opening.startswith(text):
                best = j
        return best

    def _intervene(self, r: _Row, action: Action, *, at: int, step: int) -> None:
        r.trace.extra_tokens += len(r.tokens) - at
        r.tokens = r.tokens[:at]
        r.forced = []
        r.trace.interventions.append(Intervention(action.value, at, step))
        kept = self._continuation(r, r.tokens)
        before = kept or self.tok.decode(r.tokens[:r.n_prefill], skip_special_tokens=True)  # else the prefill's end
        lead = "" if not before or before.endswith((" ", "\n")) else " "
        if action == Action.FIXED_REFUSAL:  # keep what was final before the trigger, then refuse and stop
            r.text = kept + lead + r.cfg.fixed_refusal
            r.finished, r.finish_reason = True, "content_filter"
            return
        r.forced = self.tok(lead + r.cfg.refusal_prefix, add_special_tokens=False)["input_ids"]

    def _continuation(self, r: _Row, tokens: list[int]) -> str:
        return self.tok.decode(tokens[r.n_prefill:], skip_special_tokens=True)

    def _check_stop(self, r: _Row, token: int) -> bool:
        """After appending `token`: True if the row is now finished."""
        if token in self.eos_ids and not r.forced:
            r.tokens.pop()
            r.finished, r.finish_reason = True, "stop"
            return True
        if r.cfg.stop:
            text = self._continuation(r, r.tokens)
            cut = min((i for i in (text.find(s) for s in r.cfg.stop) if i >= 0), default=-1)
            if cut >= 0:
                r.text, r.finished, r.finish_reason = text[:cut], True, "stop"
                return True
        if len(r.tokens) - r.n_prefill >= r.cfg.max_new_tokens or r.steps >= 2 * r.cfg.max_new_tokens + 64:
            r.finished, r.finish_reason = True, "length"
            return True
        return False

    def _crop_dead_tail(self, kinds: torch.Tensor, gen_index: torch.Tensor, cache: Any):
        dead = kinds == Kind.PAD
        # trailing run of dead slots common to every row
        n = 0
        T = kinds.shape[1]
        while n < T and bool(dead[:, T - 1 - n].all()):
            n += 1
        if n:
            drop_last(cache, n)
            kinds, gen_index = kinds[:, : T - n], gen_index[:, : T - n]
            if cache_length(cache) != kinds.shape[1]:
                raise RuntimeError(f"cache length {cache_length(cache)} != tracked slots {kinds.shape[1]}")
        return kinds, gen_index

    def _emit(self, rows: list[_Row], deltas: bool = True) -> Iterator[StepEvent]:
        for b, r in enumerate(rows):
            if getattr(r, "_done_emitted", False):
                continue
            last_p = r.trace.evaluations[-1].p_malicious if r.trace.evaluations else None
            if r.finished:
                text = r.text if r.text is not None else self._continuation(r, r.tokens)
                delta = text[r.emitted:]
                r.emitted = len(text)
                r._done_emitted = True  # type: ignore[attr-defined]
                res = GenerationResult(text=text, token_ids=list(r.tokens[r.n_prefill:]), finish_reason=r.finish_reason or "stop",
                                       trace=r.trace, prompt_tokens=r.prompt_len,
                                       completion_tokens=len(r.tokens) - r.n_prefill,
                                       prefill=self.tok.decode(r.tokens[: r.n_prefill], skip_special_tokens=True))
                r.trace.final_rule = r.state.rule
                yield StepEvent(b, delta, last_p, True, r.finish_reason, res)
                continue
            if not deltas:
                continue
            # tokens at or after a pending trigger may still be rolled back: hold them back
            safe = r.tokens if r.state.rule != "R3" else r.tokens[: max(r.state.s_t, r.n_prefill)]
            text = self._continuation(r, safe)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character
                text = text[:-1]
            if len(text) > r.emitted:
                delta, r.emitted = text[r.emitted:], len(text)
                yield StepEvent(b, delta, last_p, False, None)
