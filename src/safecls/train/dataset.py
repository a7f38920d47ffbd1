"""Training data: read and check every record (before any model loads), tokenize, and a resumable example order.

Records are the data room's SFT lines (`safecls.data.sft_records.SFTExample`: messages ending with the assistant reply,
label, source) or pretrain-corpus lines `{"text", "label"}`. The order is an endless stream of seeded per-epoch
permutations; its whole state is (epoch, offset), so a resumed run draws exactly the batches the killed run would have.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from safecls.data.sft_records import SFTExample, check_example, iter_jsonl
from safecls.errors import DataError
from safecls.model.encoding import Batch, Encoded, collate, encode_prompt, encode_text
from safecls.model.routing import Kind, Stage
from safecls.model.safecls_model import CLS_TOKEN

logger = logging.getLogger(__name__)

_FORMATS_FIX = ("each line needs either 'messages' (user ... assistant), 'label' (0 or 1) and 'source', "
                "or (pretrain stage) 'text' and 'label'")


@dataclass(slots=True)
class Record:
    """One checked training record. Exactly one of `messages` / `text` is set."""

    label: int
    where: str
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    masked_prefix_chars: int = 0


@dataclass(slots=True)
class Item:
    """A tokenized record, without [CLS] (collate inserts it)."""

    enc: Encoded
    label: int


def _problem(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(map(str, e["loc"])) or "(record)"
    if e["type"] == "missing":
        return f"field {loc!r} is missing"
    return f"field {loc!r}: {e['msg']} (got {e.get('input')!r})"


def _text_record(obj: dict, path: Path, n: int) -> Record:
    text, label = obj.get("text"), obj.get("label")
    if not isinstance(text, str) or not text.strip():
        raise DataError(path, f"field 'text' is empty or not a string (got {text!r})", line=n, fix=_FORMATS_FIX)
    if "label" not in obj:
        raise DataError(path, "field 'label' is missing", line=n, fix="give every record a label: 0 benign, 1 malicious")
    if label not in (0, 1) or isinstance(label, bool):
        raise DataError(path, f"field 'label' must be 0 or 1 (got {label!r})", line=n)
    return Record(label=int(label), where=f"{path}:{n}", text=text)


def _check_no_cls_text(path: Path, n: int, *texts: str) -> None:
    # The tokenizer maps the literal string to the [CLS] id once the token is added: data could plant a second [CLS].
    if any(CLS_TOKEN in t for t in texts):
        raise DataError(path, f"the text contains the reserved token {CLS_TOKEN!r}", line=n,
                        fix="remove it from the record (it would be read as the safety [CLS] token)")


def read_records(path: str | Path, stage: Stage) -> list[Record]:
    """Read and check every line; the first bad one raises DataError naming the file and line.

    Raises:
        DataError: missing file, malformed JSON, missing/invalid label, empty response or text, a text record in
            the sft stage (it has no response to train on), or no records at all.
    """
    path = Path(path)
    out: list[Record] = []
    for n, obj in iter_jsonl(path):
        if "messages" in obj:
            try:
                ex = SFTExample.model_validate(obj)
            except ValidationError as e:
                raise DataError(path, _problem(e), line=n, fix=_FORMATS_FIX) from None
            check_example(ex, path, n)
            _check_no_cls_text(path, n, *(m.content for m in ex.messages))
            msgs = [m.model_dump() for m in ex.prompt_messages]
            msgs.append({"role": "assistant", "content": ex.response})
            out.append(Record(label=ex.label, where=f"{path}:{n}", messages=msgs,
                              masked_prefix_chars=ex.masked_prefix_chars))
        elif "text" in obj:
            if stage == "sft":
                raise DataError(path, "a {'text'} record in the sft stage: it has no response to train on", line=n,
                                fix="use chat records ('messages') for sft, or stage: pretrain")
            out.append(_text_record(obj, path, n))
            _check_no_cls_text(path, n, out[-1].text)
        else:
            raise DataError(path, f"unknown record (keys: {', '.join(sorted(obj)) or 'none'})", line=n, fix=_FORMATS_FIX)
    if not out:
        raise DataError(path, "no records", fix="the file is empty; point train_file/eval_file at the data")
    return out


def fingerprint(path: str | Path) -> str:
    """sha256 of the file: a resumed run must see the same data."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _response_kinds(tokenizer: Any, response: str, masked_prefix_chars: int) -> Encoded:
    """Response tokens as the model emits them (eos included). Tokens inside a masked prefix (Qi et al.
    augmentation) are routed as the response they are at inference, but are no LM target: the model learns to
    recover from a harmful start, not to write one."""
    enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    kinds = [int(Kind.RESPONSE)] * len(ids)
    untargeted = [a < masked_prefix_chars for a, _ in enc["offset_mapping"]]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        kinds.append(int(Kind.RESPONSE))
        untargeted.append(False)
    return Encoded(ids, kinds, untargeted if any(untargeted) else None)


def tokenize(records: Sequence[Record], tokenizer: Any, max_length: int) -> list[Item]:
    """Encode each record for training. `max_length` counts the [CLS]: responses and texts are cut at the end;
    a chat record whose prompt leaves no room for a response token is dropped (logged)."""
    budget = max_length - 1
    items, dropped = [], 0
    for r in records:
        if r.text is not None:
            enc = encode_text(tokenizer, r.text)
            items.append(Item(Encoded(enc.ids[:budget], enc.kinds[:budget]), r.label))
            continue
        prompt = encode_prompt(tokenizer, r.messages[:-1])
        resp = _response_kinds(tokenizer, r.messages[-1]["content"], r.masked_prefix_chars)
        room = budget - len(prompt)
        untargeted = resp.untargeted or [False] * len(resp.ids)
        if room < 1 or all(untargeted[:room]):  # no response token left to learn
            dropped += 1
            logger.debug("%s: dropped: the prompt (%d tokens) leaves no room under max_length %d", r.where,
                         len(prompt), max_length)
            continue
        untargeted = [False] * len(prompt) + untargeted[:room] if resp.untargeted else None
        items.append(Item(Encoded(prompt.ids + resp.ids[:room], prompt.kinds + resp.kinds[:room], untargeted), r.label))
    if dropped:
        logger.warning("dropped %d of %d records whose prompt does not fit max_length %d", dropped, len(records),
                       max_length)
    if not items:
        raise DataError(records[0].where.rsplit(":", 1)[0], f"no record fits max_length {max_length}",
                        fix="raise max_length or shorten the prompts")
    return items


def make_batch(items: Sequence[Item], cls_token_id: int, pad_token_id: int, with_cls: bool) -> Batch:
    return collate([it.enc for it in items], cls_token_id, pad_token_id, side="right",
                   labels=[it.label for it in items], with_cls=with_cls)


class ExampleOrder:
    """An endless stream of example indices: epoch e is a permutation seeded by (seed, e).

    With `lengths` and `group` > 1, each epoch's permutation is cut into runs of `group` indices and each run is
    sorted by length, so consecutive micro-batches hold examples of similar length and pad little (HF Trainer's
    group_by_length; measured on 2 CPU cores: padding to the longest row tripled the step time). The whole state is
    still (epoch, offset): the order is a pure function of (seed, epoch, lengths)."""

    def __init__(self, n: int, seed: int, epoch: int = 0, offset: int = 0, *, lengths: Sequence[int] | None = None,
                 group: int = 1):
        if n <= 0:
            raise ValueError(f"ExampleOrder needs at least one example (got n={n})")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"ExampleOrder: {len(lengths)} lengths for {n} examples")
        self.n, self.seed, self.epoch, self.offset = n, seed, epoch, offset
        self.lengths, self.group = (list(lengths) if lengths is not None else None), group
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        if self.lengths is None or self.group <= 1:
            return perm
        lengths = self.lengths
        return [i for s in range(0, self.n, self.group) for i in sorted(perm[s:s + self.group], key=lambda i: lengths[i])]

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.offset == self.n:
                self.epoch, self.offset = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            step = min(k - len(out), self.n - self.offset)
            out += self._perm[self.offset:self.offset + step]
            self.offset += step
        return out

    def state_dict(self) -> dict[str, int]:
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "offset": self.offset, "group": self.group}

    @classmethod
    def from_state(cls, state: dict[str, int], lengths: Sequence[int] | None = None) -> ExampleOrder:
        return cls(state["n"], state["seed"], state["epoch"], state["offset"], lengths=lengths,
                   group=state.get("group", 1))
