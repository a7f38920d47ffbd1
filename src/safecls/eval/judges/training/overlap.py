"""Overlap between what the judge learns from and the held-out split, so held-out numbers measure unseen pairs.

A (prompt, response) pair of the training side overlaps a held-out pair when

- the prompts are the same: the same prompt id, or the same text after `normalise_prompt`; and
- the responses are the same after `normalise_reply` ("exact"), or their sentence embeddings (all-MiniLM-L6-v2, the
  encoder the judge extra installs: `data.embeddings.sentence_embeddings`) have cosine >= `threshold` ("near", default 0.95).

With `same_prompt=False` the prompt condition is dropped: a reply shared with a held-out row under any prompt counts.
The demo's fine-tuned models answer many prompts with one canned, looping refusal, so that rule finds copies of a
reply that the pair rule, which is what the judge reads, does not. Texts the encoder reads as unknown tokens only (a
run of emoji, words glued into one) all embed alike, so the near rule calls any two of them copies.

The training side is everything fitted or calibrated on: the hand-labelled replies, the constructed rows and the dev
split. Overlap is removed from that side (`drop_overlap`); the held-out split, the scarce double-read asset, stays
whole. `heldout_pairs` reads the held-out texts without their labels: nothing here can choose by them.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np

from safecls.eval.judges.training.sources import benchmark_prompts, fixture_rows, read_fixture

logger = logging.getLogger(__name__)

Embed = Callable[[list[str]], np.ndarray]  # texts -> (N, D) unit-length embeddings
NEAR_COSINE = 0.95
T = TypeVar("T")


class Pair(NamedTuple):
    id: str
    prompt: str
    response: str


@dataclass(frozen=True, slots=True)
class Overlap:
    index: int  # into the candidates
    heldout: int  # into the held-out pairs
    kind: Literal["exact", "near"]
    cosine: float | None = None  # near only


def normalise_prompt(text: str) -> str:
    """Lower case, every run of non-word characters one space: "How to X?" == "how to x"."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def normalise_reply(text: str) -> str:
    """Lower case, whitespace collapsed."""
    return " ".join(text.lower().split())


def as_pair(row: Any) -> Pair:
    """A Pair from a TrainRow, a fixture dict (with `prompt`) or a Pair."""
    if isinstance(row, dict):
        return Pair(row.get("id", ""), row["prompt"], row["response"])
    return Pair(getattr(row, "id", ""), row.prompt, row.response)


def heldout_pairs(fixture: Path, data_dir: Path) -> list[Pair]:
    """The held-out split's (id, prompt, response), labels left behind."""
    rows = read_fixture(fixture, "heldout")
    prompts = benchmark_prompts((r["id"] for r in rows), data_dir)
    return [Pair(r["id"], prompts[r["id"]], r["response"]) for r in rows]


def dev_rows(fixture: Path, data_dir: Path, **kwargs: Any) -> tuple[list[dict[str, Any]], list[Overlap]]:
    """(the dev split's rows with prompts, minus any that overlap the held-out split; the overlaps): what calibration
    and the epoch-end check read. `kwargs` go to `find_overlap`."""
    return drop_overlap(fixture_rows(fixture, data_dir, "dev"), heldout_pairs(fixture, data_dir), **kwargs)


def _cosines(embed: Embed, a: list[str], b: list[str]) -> np.ndarray:
    """(len(a), len(b)) cosines; each distinct text is embedded once."""
    texts = list(dict.fromkeys(a + b))
    at = {t: k for k, t in enumerate(texts)}
    e = np.asarray(embed(texts), dtype=np.float32)
    return e[[at[t] for t in a]] @ e[[at[t] for t in b]].T


def find_overlap(candidates: Sequence[Any], heldout: Sequence[Pair], *, embed: Embed | None = None,
                 threshold: float = NEAR_COSINE, same_prompt: bool = True) -> list[Overlap]:
    """One Overlap per candidate that overlaps a held-out pair (see the module docstring), exact before near.
    Without `embed`, exact matches only."""
    cands = [as_pair(c) for c in candidates]
    held = list(heldout)
    by_reply: dict[str, list[int]] = {}
    for h, p in enumerate(held):
        by_reply.setdefault(normalise_reply(p.response), []).append(h)
    partners: list[list[int]]
    if same_prompt:
        by_key: dict[str, list[int]] = {}
        for h, p in enumerate(held):
            by_key.setdefault("p:" + normalise_prompt(p.prompt), []).append(h)
            if p.id:
                by_key.setdefault("i:" + p.id, []).append(h)
        partners = [sorted(set(by_key.get("p:" + normalise_prompt(c.prompt), []) + (by_key.get("i:" + c.id, [])
                                                                                    if c.id else [])))
                    for c in cands]
    else:
        partners = [list(range(len(held)))] * len(cands)
    out: dict[int, Overlap] = {}
    for i, c in enumerate(cands):
        same = [h for h in by_reply.get(normalise_reply(c.response), []) if h in set(partners[i])] if same_prompt \
            else by_reply.get(normalise_reply(c.response), [])
        if same:
            out[i] = Overlap(i, same[0], "exact")
    todo = [i for i, ps in enumerate(partners) if ps and i not in out]
    if embed is not None and todo:
        if same_prompt:
            for i in todo:
                sims = _cosines(embed, [cands[i].response], [held[h].response for h in partners[i]])[0]
                if sims.max() >= threshold:
                    k = int(sims.argmax())
                    out[i] = Overlap(i, partners[i][k], "near", round(float(sims[k]), 4))
        else:
            sims = _cosines(embed, [cands[i].response for i in todo], [p.response for p in held])
            for row, i in enumerate(todo):
                if sims[row].max() >= threshold:
                    k = int(sims[row].argmax())
                    out[i] = Overlap(i, k, "near", round(float(sims[row, k]), 4))
    return [out[i] for i in sorted(out)]


def drop_overlap(rows: Sequence[T], heldout: Sequence[Pair], **kwargs: Any) -> tuple[list[T], list[Overlap]]:
    """(the rows that overlap no held-out pair, the overlaps found); `kwargs` go to `find_overlap`."""
    found = find_overlap(rows, heldout, **kwargs)
    gone = {o.index for o in found}
    return [r for i, r in enumerate(rows) if i not in gone], found


def count_overlap(found: Sequence[Overlap], groups: Sequence[str]) -> dict[str, dict[str, int]]:
    """{group of the overlapping candidate: {"exact": n, "near": n}}; `groups[i]` names candidate i's group."""
    counts = Counter((groups[o.index], o.kind) for o in found)
    return {g: {"exact": counts[(g, "exact")], "near": counts[(g, "near")]} for g in sorted({g for g, _ in counts})}
