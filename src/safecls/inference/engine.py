"""The decode engine: KV cache, left-padded batches, sampling, and the [CLS] reads fused into decoding.

`generate()` in transformers rejects 4D masks, so the engine owns its loop. Each step feeds one token per row and,
when some row is due for a read, an extra EVAL query row whose mask is the strategic-attention span (masks come from
model/routing.py). The EVAL row's key/value entry is dropped from the cache right after the forward, so no later
token can attend a stale read. Rolled-back positions become PAD (attended by nobody) and the common dead tail is
cropped, so a rollback truncates the cache exactly.

Reads: the prompt's own [CLS] (free, in the prompt's forward); a caller's prefill, right after it (an EVAL slot at
the end of the prompt's forward); then the schedule's reads, every token while a trigger is pending, and a last read
over the unread tail of a reply that ends (strategic.py, schedules.py). Per-row rules live in rows.py, edits of a
reply in intervention.py, streamed text in streaming.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from safecls._compat import cache_kwarg, cache_length, drop_last, new_cache
from safecls.errors import ContextLengthError, DataError
from safecls.inference import schedules, strategic
from safecls.inference.config import DecodeConfig, per_row
from safecls.inference.intervention import intervene
from safecls.inference.results import GenerationResult, StepEvent
from safecls.inference.rows import Row, ending, pick
from safecls.inference.sampling import make_generator
from safecls.inference.strategic import Action
from safecls.inference.streaming import events
from safecls.inference.trace import Evaluation
from safecls.model import routing
from safecls.model.encoding import Encoded, Prompt, collate, context_length, encode_prompt, encode_response
from safecls.model.routing import DEFAULT_STAGE, NO_STEP, Kind

logger = logging.getLogger(__name__)

__all__ = ["Engine", "GenerationResult", "StepEvent"]


class _PlainAdapter:
    """A plain HF causal LM (or a checkpoint trained without [CLS]) seen through the SafeClsModel interface the engine
    uses: no head, no [CLS] in the sequence."""

    def __init__(self, model: Any, tokenizer: Any, lm_logits: Any = None):
        self.base, self.tokenizer = model, tokenizer
        self.head, self.cls_token_id, self.stage = None, None, DEFAULT_STAGE
        self.causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.backbone = getattr(self.causal_lm, self.causal_lm.base_model_prefix)
        self.context_length = context_length(self.causal_lm.config)
        self._lm_logits = lm_logits or self.causal_lm.get_output_embeddings()

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._lm_logits(hidden)

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.base.parameters()).dtype


class Engine:
    def __init__(self, model: Any):
        """`model`: a SafeClsModel (one trained without [CLS] decodes as the plain model it is). For a plain HF model
        use `Engine.plain(model, tokenizer)`."""
        if getattr(model, "with_cls", True) is False:
            model = _PlainAdapter(model.base, model.tokenizer, model.lm_logits)
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
    def load(cls, ref: str, *, dtype: Any = None, device: str | None = None) -> Engine:
        """An engine for what `--model` names (model/resolve.py): default, base, untrained, plain:PATH or a folder."""
        from safecls.model.resolve import resolve_model

        r = resolve_model(ref, dtype=dtype, device=device)
        return cls(r.model) if r.safecls else cls.plain(r.model, r.tokenizer)

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
        configs = self.resolve(per_row(config, len(prompts)))
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
        """Yields StepEvents as text becomes final. `cancelled(row) -> bool` is polled each step."""
        configs = self.resolve(per_row(config, len(prompts)))
        with torch.no_grad():
            yield from self._run(list(prompts), configs, list(prefills) if prefills else [""] * len(prompts), cancelled)

    def resolve(self, configs: list[DecodeConfig]) -> list[DecodeConfig]:
        """Each config with concrete threshold and tau: its own, else the checkpoint's calibrated ones."""
        calibrated = getattr(self.model, "calibrated", None) or {}
        return [c.resolved(calibrated) for c in configs]

    # ---- model calls ---------------------------------------------------------------------------------------------
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
        return self._run_backbone(input_ids, mask, pos, cache).last_hidden_state

    def _run_backbone(self, input_ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> Any:
        """The backbone's output, with every layer's states where the head reads more than the final one."""
        return self.model.backbone(input_ids=input_ids, attention_mask=routing.additive(mask, self.model.dtype),
                                   position_ids=pos, use_cache=True, **{self._ckw: cache},
                                   output_hidden_states=self.has_head and self.model.reads_layers)

    def _read(self, out: Any, index: Any) -> torch.Tensor:
        """What the head reads at `index` of a backbone output (the final state, or several layers')."""
        return self.model.head_input(out, index) if self.has_head else out.last_hidden_state[index]

    def _next_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.lm_logits(hidden).float()
        if self.has_head:
            logits[..., self.model.cls_token_id] = float("-inf")  # the [CLS] is never generated
        return logits[..., : self.vocab] if logits.shape[-1] > self.vocab else logits

    def _head_p(self, h: torch.Tensor) -> torch.Tensor:
        """P(malicious) of the head at hidden states (..., H)."""
        return torch.softmax(self.model.head(h).float(), -1)[..., 1]

    def _cls_visible(self, cfg: DecodeConfig) -> bool:
        if not self.has_head:
            return False
        return cfg.cls_visible if cfg.cls_visible is not None else self.model.stage == "sft"

    # ---- the decode loop -----------------------------------------------------------------------------------------
    def _run(self, prompts, configs, prefills, cancelled, deltas: bool = True) -> Iterator[StepEvent]:
        dev = self.model.device
        encs = self._encode(prompts, prefills, configs)
        B = len(encs)
        rows = []
        for e, cfg in zip(encs, configs, strict=True):
            n_pre = sum(1 for k in e.kinds if k == Kind.RESPONSE)
            rows.append(Row(cfg=cfg, prompt_len=len(e) - n_pre, n_prefill=n_pre, prompt_ids=e.ids[: len(e) - n_pre],
                            gen=make_generator(cfg, dev), tokens=e.ids[len(e) - n_pre:]))
        vis = torch.tensor([self._cls_visible(r.cfg) for r in rows], dtype=torch.bool, device=dev)
        read_prompt = torch.tensor([r.cfg.read_prompt for r in rows], dtype=torch.bool, device=dev)
        cache = new_cache(self.model.causal_lm)
        kinds, gen_index, logits = self._prompt_forward(encs, rows, vis, read_prompt, cache)
        pending: list[int | None] = [None if r.finished else pick(r, logits[b], self.eos_ids) for b, r in enumerate(rows)]
        yield from events(rows, self.tok, deltas)

        while not all(r.finished for r in rows):
            if cancelled is not None:
                for b, r in enumerate(rows):
                    if not r.finished and cancelled(b):
                        r.finish("cancelled")
                        pending[b] = None
            live = [not r.finished and pending[b] is not None for b, r in enumerate(rows)]
            if not any(live):
                break
            ends: list[tuple[str, str | None] | None] = [None] * B
            for b, r in enumerate(rows):
                if live[b]:
                    r.tokens.append(pending[b])
                    ends[b] = ending(r, pending[b], self.eos_ids, self.tok)
            # an EOS slot is not part of the reply: fed as padding, read by nobody
            real = [live[b] and not (ends[b] and ends[b][0] == "eos") for b in range(B)]
            last = [r.generated - 1 - (0 if real[b] else 1) for b, r in enumerate(rows)]  # newest reply step
            due = [self._due(r, last[b], ends[b]) if live[b] else False for b, r in enumerate(rows)]
            spans = [strategic.span(r.state, r.cfg, last[b]) if due[b] else (0, 0) for b, r in enumerate(rows)]

            step_tokens = torch.tensor([pending[b] if live[b] else self.pad_id for b in range(B)], device=dev)
            pos = torch.tensor([r.position(len(r.tokens) - 1) for r in rows], device=dev)
            real_t = torch.tensor(real, dtype=torch.bool, device=dev)
            kinds_ext = torch.cat([kinds, torch.where(real_t, int(Kind.RESPONSE), int(Kind.PAD))[:, None]], 1)
            step_gen = torch.tensor([last[b] if real[b] else NO_STEP for b in range(B)], device=dev)
            gen_ext = torch.cat([gen_index, step_gen[:, None]], 1)
            live_t = torch.tensor(live, dtype=torch.bool, device=dev)
            tok_row = torch.cat([routing.token_row(kinds, live_t, vis), torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
            h_tok, h_read = self._step_forward(step_tokens, tok_row, pos, kinds_ext, gen_ext, spans, due, read_prompt,
                                               rows, last, cache)
            kinds, gen_index = kinds_ext, gen_ext
            logits = self._next_logits(h_tok)
            p_read = self._head_p(h_read) if h_read is not None else None
            for b, r in enumerate(rows):
                if not live[b]:
                    continue
                r.steps += 1
                action, at, step = Action.NONE, -1, last[b]
                if due[b]:
                    p = float(p_read[b])
                    r.trace.evaluations.append(Evaluation(step, p, r.state.rule, spans[b]))
                    action, at = strategic.after_read(r.state, r.cfg, step, p, spans[b][1])
                if action == Action.NONE and ends[b] is not None:
                    action, at = strategic.at_end(r.state, r.cfg)
                if action != Action.NONE and (cut := intervene(r, action, at, step, self.tok)) is not None:
                    dead = (gen_index[b] >= cut) & (kinds[b] == Kind.RESPONSE)
                    kinds[b, dead], gen_index[b, dead] = int(Kind.PAD), NO_STEP
                    r.state.read_to = min(r.state.read_to, cut)  # what follows the rollback is new text
                elif ends[b] is not None:
                    kind, text = ends[b]
                    if kind == "eos":
                        r.tokens.pop()
                    r.finish("length" if kind == "length" else "stop", text)
                pending[b] = None if r.finished else pick(r, logits[b], self.eos_ids)
            kinds, gen_index = self._crop_dead_tail(kinds, gen_index, cache)
            yield from events(rows, self.tok, deltas)
        yield from events(rows, self.tok, deltas)  # rows finished by cancellation alone still get their final event

    def _due(self, r: Row, last: int, ends: tuple[str, str | None] | None) -> bool:
        if not self.has_head or last < r.quiet_until:  # reads resume after an inserted prefix (and after a prefill)
            return False
        unread = r.state.read_to <= last
        if ends is not None and ends[0] == "eos" and not unread:  # no new token since the last read
            return False
        tail = ends is not None and unread and schedules.active(r.cfg, last)  # a last read over the unread tail
        return strategic.wants_read(r.state, schedules.should_read(r.cfg, last), tail)

    def _prompt_forward(self, encs: list[Encoded], rows: list[Row], vis: torch.Tensor, read_prompt: torch.Tensor,
                        cache: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The prompt's forward: the [CLS] reads the prompt's content (sft routing), and a row with a prefill gets an
        EVAL slot at the end that reads it (dropped from the cache after). Sets each row's initial state and acts on
        it. Returns the cached kinds, generation steps, and the next-token logits."""
        dev = self.model.device
        B = len(rows)
        batch = collate(encs, self.model.cls_token_id or 0, self.pad_id, side="left", with_cls=self.has_head)
        kinds, ids = batch.kinds.to(dev), batch.input_ids.to(dev)
        gen_index = torch.full_like(kinds, NO_STEP)
        for b, r in enumerate(rows):
            if r.n_prefill:
                gen_index[b, kinds[b] == Kind.RESPONSE] = torch.arange(-r.n_prefill, 0, device=dev)
        reads_prefill = [self.has_head and r.n_prefill > 0 and r.cfg.policy != "low" for r in rows]
        slot = any(reads_prefill)
        if slot:
            slot_kind = torch.tensor([int(Kind.EVAL) if x else int(Kind.PAD) for x in reads_prefill], device=dev)
            kinds_in = torch.cat([kinds, slot_kind[:, None]], 1)
            ids = torch.cat([ids, torch.full((B, 1), self.model.cls_token_id, dtype=ids.dtype, device=dev)], 1)
        else:
            kinds_in = kinds
        allow = routing.inference_allowed(kinds_in, vis)
        if slot:
            lo = torch.tensor([-r.n_prefill for r in rows], device=dev)
            read = routing.read_row(kinds, gen_index, lo, torch.zeros_like(lo), read_prompt)
            allow[:, -1, :-1] = read & torch.tensor(reads_prefill, device=dev)[:, None]
        pos = routing.position_ids(kinds_in, "sft")
        out = self._run_backbone(ids, allow, pos, cache)
        T = kinds.shape[1]  # the reply's first logits come from the last slot before the prefill's read
        if slot:
            drop_last(cache, 1)
        logits = self._next_logits(out.last_hidden_state[:, T - 1])
        if not self.has_head:
            for r in rows:
                r.state = strategic.RowState(rule="DONE")
            return kinds, gen_index, logits
        p0 = self._head_p(self._read(out, (torch.arange(B, device=dev), batch.cls_index.to(dev))))
        p_pre = self._head_p(self._read(out, (slice(None), -1))) if slot else None
        for b, r in enumerate(rows):
            r.trace.p_initial = float(p0[b])
            r.trace.evaluations.append(Evaluation(-1, float(p0[b]), "prompt", (0, 0)))
            r.state, action = strategic.initial(r.cfg, float(p0[b]))
            at = 0
            if action == Action.NONE and reads_prefill[b] and r.state.rule == "R2":
                p = float(p_pre[b])
                r.trace.evaluations.append(Evaluation(-1, p, "prefill", (-r.n_prefill, 0)))
                action, at = strategic.after_read(r.state, r.cfg, -1, p, 0)
            if action != Action.NONE:
                intervene(r, action, at, -1, self.tok)
        return kinds, gen_index, logits

    def _step_forward(self, step_tokens, tok_row, pos, kinds_ext, gen_ext, spans, due, read_prompt, rows, last, cache):
        """One decode step: the new tokens' rows, plus an EVAL row for the rows that are due. Returns the new tokens'
        hidden states (B, H) and the reads' (B, H) or None."""
        B, dev = len(rows), tok_row.device
        if not any(due):
            return self._forward(step_tokens[:, None], tok_row[:, None, :], pos[:, None], cache)[:, 0], None
        lo = torch.tensor([s[0] for s in spans], device=dev)
        hi = torch.tensor([s[1] for s in spans], device=dev)
        read = routing.read_row(kinds_ext, gen_ext, lo, hi, read_prompt)
        read = torch.cat([read, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        # a read sits just past the newest reply token it could see
        read_pos = torch.tensor([r.position(r.n_prefill + last[b] + 1) for b, r in enumerate(rows)], device=dev)
        cls = torch.full_like(step_tokens, self.model.cls_token_id)
        if rows[0].cfg.fused:  # per_row() guarantees one value per batch
            Tc = tok_row.shape[1] - 1
            mask = torch.zeros(B, 2, Tc + 2, dtype=torch.bool, device=dev)
            mask[:, 0, : Tc + 1] = tok_row
            mask[:, 1] = read
            out = self._run_backbone(torch.stack([step_tokens, cls], 1), mask, torch.stack([pos, read_pos], 1), cache)
            drop_last(cache, 1)
            return out.last_hidden_state[:, 0], self._read(out, (slice(None), 1))
        h_tok = self._forward(step_tokens[:, None], tok_row[:, None, :], pos[:, None], cache)[:, 0]
        out = self._run_backbone(cls[:, None], read[:, None, :], read_pos[:, None], cache)  # the separate pass
        drop_last(cache, 1)
        return h_tok, self._read(out, (slice(None), 0))

    def _crop_dead_tail(self, kinds: torch.Tensor, gen_index: torch.Tensor, cache: Any):
        dead = kinds == Kind.PAD
        n, T = 0, kinds.shape[1]
        while n < T and bool(dead[:, T - 1 - n].all()):  # trailing run of dead slots common to every row
            n += 1
        if n:
            drop_last(cache, n)
            kinds, gen_index = kinds[:, : T - n], gen_index[:, : T - n]
            if cache_length(cache) != kinds.shape[1]:
                raise RuntimeError(f"cache length {cache_length(cache)} != tracked slots {kinds.shape[1]}")
        return kinds, gen_index
