"""Where the optimised string sits: `{optim_str}` in any message of any chat template, split into token pieces.

The template is rendered once with the literal placeholder, then split into the text before and after it. Each
piece is tokenized on its own, and a candidate counts only where the whole filled prompt, tokenized as the engine
tokenizes it, gives back exactly before + candidate + after: the search optimises the tokens the target will see.
A space right before the placeholder ("... consent {optim_str}") belongs to the optimised piece (`lead`): BPE
tokenizers merge it into the next word (" for"), so a prompt piece ending in a lone space is never what the engine
reads. Every token also gets its routing kind (template, query, response), so a safecls model reads the
adversarial prompt exactly as the engine would at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from safecls.errors import DataError, TemplateError
from safecls.model.encoding import CONTENT_ROLES, has_template
from safecls.model.routing import Kind

OPTIM = "{optim_str}"


@dataclass(slots=True)
class OptimPrompt:
    messages: list[dict[str, str]] | None  # with the placeholder; None for plain text
    text: str | None  # plain-text prompt with the placeholder (template-less tokenizers)
    before_ids: list[int]
    before_kinds: list[int]
    optim_kind: int  # QUERY when the placeholder is in a user/assistant turn; TEMPLATE in a system turn
    after_ids: list[int]
    after_kinds: list[int]
    target_ids: list[int]
    before_text: str = ""  # the rendered prompt before the optimised piece (its `lead` excluded)
    after_text: str = ""
    lead: str = ""  # the whitespace before the placeholder, owned by the optimised piece

    def fill(self, optim_str: str) -> list[dict[str, str]] | str:
        """The prompt with the placeholder (and its `lead`) replaced by `optim_str`, the decoded optimised tokens, as
        messages (or text) for the engine or an endpoint."""
        slot = self.lead + OPTIM
        if self.messages is None:
            return self.text.replace(slot, optim_str)  # type: ignore[union-attr]
        return [{**m, "content": m["content"].replace(slot, optim_str)} for m in self.messages]

    def ids_of(self, tokenizer: Any, optim_str: str) -> list[int]:
        """Token ids of an initial optimised string, with the `lead` it owns."""
        return list(tokenizer(self.lead + optim_str, add_special_tokens=False)["input_ids"])

    def in_context(self, tokenizer: Any, ids: torch.Tensor) -> torch.Tensor:
        """(N, n) candidates -> (N,) bool: the filled prompt tokenizes back to before + candidate + after, as the
        engine will tokenize it (a candidate that merges with its neighbours would be optimised but never seen)."""
        rows = ids.tolist()
        texts = [self.before_text + t + self.after_text for t in tokenizer.batch_decode(rows)]
        again = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return torch.tensor([list(a) == self.before_ids + r + self.after_ids for a, r in zip(again, rows)],
                            dtype=torch.bool)


def _content_spans(text: str, messages: list[dict[str, str]]) -> list[tuple[int, int, str]]:
    spans, cursor = [], 0
    for m in messages:
        content = m["content"]
        start = text.find(content, cursor) if content else -1
        if start < 0 and content.strip():
            content = content.strip()
            start = text.find(content, cursor)
        if start >= 0:
            spans.append((start, start + len(content), m["role"]))
            cursor = start + len(content)
    return spans


def _tokenize(tokenizer: Any, text: str, offset: int, spans: list[tuple[int, int, str]]) -> tuple[list[int], list[int]]:
    if not text:
        return [], []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    kinds = []
    for a, b in enc["offset_mapping"]:
        a, b = a + offset, b + offset
        content = b > a and any(a < e and b > s and role in CONTENT_ROLES for s, e, role in spans)
        kinds.append(int(Kind.QUERY if content else Kind.TEMPLATE))
    return list(enc["input_ids"]), kinds


def build(tokenizer: Any, prompt: str | list[dict[str, str]], target: str) -> OptimPrompt:
    """Split `prompt` (one user turn, chat messages, or plain text for a template-less tokenizer) at `{optim_str}`.

    Raises:
        TemplateError: no message (or more than one place) holds `{optim_str}`, or the chat template drops it.
        DataError: `target` does not re-tokenize stably after the generation prompt.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    count = sum(m.get("content", "").count(OPTIM) for m in messages)
    if count != 1:
        where = "no message holds" if count == 0 else f"{count} places hold"
        raise TemplateError(f"{where} the placeholder {OPTIM}: GCG needs exactly one. Fix: put {OPTIM} once in one "
                            f"message, e.g. {{'role': 'user', 'content': 'How do I ... {OPTIM}'}}")
    if isinstance(prompt, str) and not has_template(tokenizer):
        text, msgs = prompt, None
    elif not has_template(tokenizer):
        raise TemplateError(f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')} has no chat template, but chat "
                            "messages were given. Fix: pass plain text, or set tokenizer.chat_template")
    else:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        msgs = messages
    idx = text.find(OPTIM)
    if idx < 0 or text.count(OPTIM) != 1:
        raise TemplateError(f"the chat template did not keep {OPTIM} exactly once in the rendered prompt. Fix: use a "
                            "template that renders message content verbatim")
    spans = _content_spans(text, msgs) if msgs is not None else [(0, len(text), "user")]
    holder = next(m for m in messages if OPTIM in m.get("content", ""))
    lead = " " if " " + OPTIM in holder["content"] else ""  # only a space the message itself holds can be replaced
    before, after = text[:idx - len(lead)], text[idx + len(OPTIM):]
    before_ids, before_kinds = _tokenize(tokenizer, before, 0, spans)
    after_ids, after_kinds = _tokenize(tokenizer, after, idx + len(OPTIM), spans)
    target_ids = check_target(tokenizer, after, after_ids, target)
    return OptimPrompt(msgs, None if msgs is not None else text, before_ids, before_kinds,
                       int(Kind.QUERY if holder["role"] in CONTENT_ROLES else Kind.TEMPLATE), after_ids, after_kinds,
                       target_ids, before, after, lead)


def check_target(tokenizer: Any, after: str, after_ids: list[int], target: str) -> list[int]:
    """Target ids, checked to be what the model would see: round-trips through decode, and tokenizes the same
    alone as after the generation prompt (a leading space that merges into the prompt's last token would not)."""
    if not target:
        raise DataError("target", "is empty", fix="give the opening the reply should start with, e.g. 'Sure, here is'")
    ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    joint = list(tokenizer(after + target, add_special_tokens=False)["input_ids"]) if after else ids
    if tokenizer.decode(ids) != target or joint != after_ids + ids:
        raise DataError("target", f"{target!r} does not re-tokenize stably after the generation prompt "
                        f"(alone: {ids[:8]}..., in context: {joint[len(after_ids):][:8]}...)",
                        fix="strip leading/trailing whitespace from the target and avoid characters the tokenizer "
                        "normalises")
    return ids


def disallowed_mask(tokenizer: Any, vocab_size: int, extra_ids: tuple[int, ...] = (), *, ascii_only: bool = True) -> torch.Tensor:
    """(V,) bool: True for ids GCG may not place in the suffix: special and added tokens (the safety [CLS] among
    them), ids past the tokenizer's vocabulary (embedding padding), empty tokens and, with `ascii_only`,
    tokens that do not decode to printable ASCII."""
    bad = torch.zeros(vocab_size, dtype=torch.bool)
    n = min(len(tokenizer), vocab_size)
    bad[n:] = True
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    for i, t in enumerate(texts):
        if not t or (ascii_only and not (t.isascii() and t.isprintable())):
            bad[i] = True
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    specials |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    for i in list(specials) + list(extra_ids):
        if 0 <= int(i) < vocab_size:
            bad[int(i)] = True
    return bad
