"""The embedded starter set (resources/starter/, see its README): harmful, benign and over-refusal
prompts with fixed train/eval splits, for the offline demo. Written for this project."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

from safecls.data.files import parse_jsonl
from safecls.data.refusals import reasoned_refusal
from safecls.data.sft_records import Message, SFTExample
from safecls.errors import DataError

Split = Literal["train", "eval"]
KINDS = {"harmful": 1, "benign": 0, "over_refusal": 0}   # file stem -> label


@dataclass(frozen=True, slots=True)
class StarterPrompt:
    id: str
    category: str
    prompt: str
    split: Split
    kind: str       # harmful | benign | over_refusal
    label: int      # 1 for harmful, else 0


@dataclass(frozen=True, slots=True)
class StarterSet:
    harmful: list[StarterPrompt]
    benign: list[StarterPrompt]
    over_refusal: list[StarterPrompt]

    def all(self) -> list[StarterPrompt]:
        return [*self.harmful, *self.benign, *self.over_refusal]

    def split(self, split: Split, kinds: tuple[str, ...] = ("harmful", "benign", "over_refusal")) -> list[StarterPrompt]:
        return [p for p in self.all() if p.split == split and p.kind in kinds]

    def harmful_sft_examples(self, split: Split = "train", *, seed: int = 0) -> list[SFTExample]:
        """Harmful prompts paired with reasoned refusals for their stored category (generated, not stored)."""
        return [SFTExample(messages=[Message(role="user", content=p.prompt),
                                     Message(role="assistant", content=reasoned_refusal(p.prompt, seed=seed, category=p.category))],
                           label=1, source="starter")
                for p in self.harmful if p.split == split]


def _read(kind: str) -> list[StarterPrompt]:
    name = f"{kind}.jsonl"
    text = resources.files("safecls").joinpath("resources", "starter", name).read_text(encoding="utf-8")
    out = []
    where = f"safecls/resources/starter/{name}"
    for n, row in parse_jsonl(text, where):
        try:
            out.append(StarterPrompt(id=row["id"], category=row["category"], prompt=row["prompt"], split=row["split"],
                                     kind=kind, label=KINDS[kind]))
        except KeyError as e:
            raise DataError(where, f"bad starter row (no {e})", line=n,
                            fix="reinstall safecls; the packaged file is damaged") from None
    return out


def load_starter() -> StarterSet:
    return StarterSet(harmful=_read("harmful"), benign=_read("benign"), over_refusal=_read("over_refusal"))
