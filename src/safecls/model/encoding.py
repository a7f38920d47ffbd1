"""Chat-template-aware encoding: messages or (prompt, response) pairs to token ids, with a kind per token.

The query/response boundary and the rule-4 skip set (template, instruction and BOS tokens) are derived
from the tokenizer itself: the template is rendered to text, each message's content is located in it,
and a token is content only if its characters come from a message's content. Nothing is hard-coded
per model family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from safecls.errors import ContextLengthError, DataError, TemplateError
from safecls.model.routing import Kind

Message = dict[str, str]
Prompt = str | Sequence[Message]

# System turns are instructions (R4): [CLS] does not read them, so a system prompt cannot talk the head
# out of its verdict, and the default system prompt some templates inject does not dilute it.
CONTENT_ROLES = ("user", "assistant", "tool")


@dataclass(slots=True)
class Encoded:
    ids: list[int]
    kinds: list[int]
    # True: a token routed as its kind says but never an LM target (Qi et al.'s harmful prefix before a refusal).
    untargeted: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class Batch:
    """Collated sequences with the [CLS] inserted. All tensors are (B, T) except `labels` (B,)."""

    input_ids: torch.Tensor
    kinds: torch.Tensor
    labels: torch.Tensor | None = None
    untargeted: torch.Tensor | None = None  # (B, T) bool: tokens that are never LM targets (see Encoded)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device), self.kinds.to(device), None if self.labels is None else self.labels.to(device),
            None if self.untargeted is None else self.untargeted.to(device),
        )

    @property
    def cls_index(self) -> torch.Tensor:
        return (self.kinds == Kind.CLS).long().argmax(dim=1)


def as_messages(prompt: Prompt) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    msgs = list(prompt)
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError("messages", f"message {i} must be a dict with 'role' and 'content' (got {m!r})")
    return msgs


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer: Any, messages: list[Message], add_generation_prompt: bool) -> str:
    if not has_template(tokenizer):
        raise TemplateError(
            f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')} has no chat template, but chat messages were "
            "given. Fix: pass plain text (encode_text), or set tokenizer.chat_template to a Jinja template"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _content_spans(text: str, messages: list[Message]) -> list[tuple[int, int, str]]:
    """Character spans of each message's content in the rendered template, in order."""
    spans, cursor = [], 0
    for m in messages:
        content = m["content"]
        if not content:
            continue
        start = text.find(content, cursor)
        if start < 0:  # templates that rewrite content (strip, reformat): search for the stripped text
            stripped = content.strip()
            start = text.find(stripped, cursor) if stripped else -1
            content = stripped
        if start < 0:
            raise TemplateError(f"could not find the content of a {m['role']!r} message in the rendered chat template")
        spans.append((start, start + len(content), m["role"]))
        cursor = start + len(content)
    return spans


def _tokenize_with_kinds(tokenizer: Any, text: str, spans: list[tuple[int, int, str]]) -> Encoded:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    kinds = []
    for a, b in offsets:
        kind = Kind.TEMPLATE
        if b > a:
            for s, e, role in spans:
                if a < e and b > s and role in CONTENT_ROLES:  # any overlap with content counts as content
                    kind = Kind.QUERY
                    break
        kinds.append(int(kind))
    return Encoded(list(ids), kinds)


def encode_prompt(tokenizer: Any, prompt: Prompt) -> Encoded:
    """A prompt ready for generation (generation prompt appended). A plain string with a template-less
    tokenizer is encoded as plain text."""
    if isinstance(prompt, str) and not has_template(tokenizer):
        return encode_text(tokenizer, prompt)
    messages = as_messages(prompt)
    text = _render(tokenizer, messages, add_generation_prompt=True)
    return _tokenize_with_kinds(tokenizer, text, _content_spans(text, messages))


def encode_response(tokenizer: Any, response: str, *, add_eos: bool = True) -> Encoded:
    """Response tokens exactly as the model would emit them after the generation prompt, eos included."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        ids = list(ids) + [tokenizer.eos_token_id]
    return Encoded(list(ids), [int(Kind.RESPONSE)] * len(ids))


def encode_pair(tokenizer: Any, prompt: Prompt, response: str | None) -> Encoded:
    enc = encode_prompt(tokenizer, prompt)
    if response is None:
        return enc
    r = encode_response(tokenizer, response)
    return Encoded(enc.ids + r.ids, enc.kinds + r.kinds)


def encode_text(tokenizer: Any, text: str) -> Encoded:
    """Plain text (pretrain stage): every token is content; a BOS the tokenizer adds is TEMPLATE."""
    ids = tokenizer(text)["input_ids"]
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    kinds = [int(Kind.TEMPLATE if t in specials else Kind.QUERY) for t in ids]
    return Encoded(list(ids), kinds)


def context_length(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_length(n: int, limit: int | None, what: str = "sequence") -> None:
    if limit is not None and n > limit:
        raise ContextLengthError(
            f"{what} has {n} tokens with [CLS], over the model's context length {limit}. "
            "Fix: shorten the input or truncate it (e.g. max_length in the data config)"
        )


def collate(
    items: Sequence[Encoded],
    cls_token_id: int,
    pad_token_id: int,
    *,
    side: str = "left",
    labels: Sequence[int] | None = None,
    with_cls: bool = True,
) -> Batch:
    """Insert [CLS] before each sequence's tokens and pad to the longest. `side`: where the padding goes."""
    rows = []
    for e in items:
        ids, kinds = list(e.ids), list(e.kinds)
        untargeted = list(e.untargeted) if e.untargeted is not None else [False] * len(ids)
        if with_cls:
            ids, kinds, untargeted = [cls_token_id] + ids, [int(Kind.CLS)] + kinds, [False] + untargeted
        rows.append((ids, kinds, untargeted))
    T = max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), T), pad_token_id, dtype=torch.long)
    kinds_t = torch.full((len(rows), T), int(Kind.PAD), dtype=torch.long)
    untargeted_t = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, (ids, kinds, untargeted) in enumerate(rows):
        sl = slice(T - len(ids), T) if side == "left" else slice(0, len(ids))
        input_ids[i, sl] = torch.tensor(ids, dtype=torch.long)
        kinds_t[i, sl] = torch.tensor(kinds, dtype=torch.long)
        untargeted_t[i, sl] = torch.tensor(untargeted, dtype=torch.bool)
    lab = None if labels is None else torch.tensor(list(labels), dtype=torch.long)
    return Batch(input_ids, kinds_t, lab, untargeted_t if bool(untargeted_t.any()) else None)
