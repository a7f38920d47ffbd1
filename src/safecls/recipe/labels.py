"""The recipe's hand-made data, shipped with the package: labels of safety-sft's requests with a written reason for
each harmful one, and contrast pairs (a safe request that sounds dangerous, and a harmful twin on the same words).

- resources/recipe/safety_sft_labels.jsonl: {"id", "sha", "label": harmful|benign|borderline, "reason"}. Every
  request was read by a person (docs/MODEL_CARD.md says how); `reason` completes the refusal prefix for the harmful
  ones. `sha` is a hash of the request's text: a changed source file is caught, not silently mislabelled.
- resources/recipe/safety_sft_second_reading.jsonl: a blind second reading of 240 of them (agreement in the card).
- resources/recipe/contrast_pairs.jsonl: {"id", "type", "safe", "unsafe", "reason"}, written for safecls (never taken
  from an evaluation set; overlap with them is checked by embedding similarity in recipe/overlap.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from safecls.data.files import parse_jsonl
from safecls.errors import DataError
from safecls.recipe.sources import SourcePrompt, text_hash

Label = Literal["harmful", "benign", "borderline"]


@dataclass(frozen=True, slots=True)
class Labelled:
    label: Label
    reason: str


@dataclass(frozen=True, slots=True)
class ContrastPair:
    id: str
    type: str
    safe: str
    unsafe: str
    reason: str


def _read(name: str) -> list[dict]:
    path = resources.files("safecls") / "resources" / "recipe" / name
    return [row for _, row in parse_jsonl(path.read_text(encoding="utf-8"), f"safecls/resources/recipe/{name}")]


def safety_sft_labels(prompts: list[SourcePrompt], name: str = "safety_sft_labels.jsonl") -> dict[str, Labelled]:
    """{prompt id: label} for the safety-sft pool, each checked against the text it was given for.

    Raises:
        DataError: a request's text differs from the one that was labelled (another version of the source file).
    """
    by_id = {p.id: p for p in prompts}
    out = {}
    for row in _read(name):
        p = by_id.get(row["id"])
        if p is None:
            continue
        if text_hash(p.prompt) != row["sha"]:
            raise DataError(f"resources/recipe/{name}", f"{row['id']} was labelled for another text than "
                            f"{p.prompt[:60]!r}", fix="use the safety-sft file the labels were made for (its sha256 is "
                            "in ../shared/data/safety-sft/SOURCE.md)")
        out[row["id"]] = Labelled(row["label"], row.get("reason", ""))
    return out


@cache
def contrast_pairs() -> tuple[ContrastPair, ...]:
    return tuple(ContrastPair(**row) for row in _read("contrast_pairs.jsonl"))
