"""The prompt pools the recipe draws from, read from a shared/data-style folder, each prompt with a stable id.

Ids are `<pool>/<row index>`: labels and hand-written reasons kept in the package refer to rows by id (and a hash
of the text, checked on read), so no third-party text is copied into the repository.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from safecls.data.readers import read_alpaca
from safecls.errors import DataError

# pool -> (file under the data folder, keep rows with earlier turns?)
POOLS = {
    "safety-sft": ("safety-sft/safety_only_data_Instructions.json", False),
    "alpaca": ("benign-sft/alpaca_en_demo.json", False),
    "code-alpaca": ("benign-sft/code_alpaca_2k.json", False),
    "lima": ("benign-sft/lima.json", False),
}
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True, slots=True)
class SourcePrompt:
    id: str
    prompt: str
    reference: str | None  # the dataset's own response, where it has one

    @property
    def pool(self) -> str:
        return self.id.split("/", 1)[0]


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:12]


def read_pool(data_dir: str | Path, pool: str) -> list[SourcePrompt]:
    """Single-turn prompts of one pool, at most MAX_PROMPT_CHARS long, in file order."""
    if pool not in POOLS:
        raise DataError(pool, "unknown prompt pool", fix=f"use one of {', '.join(POOLS)}")
    rel, _ = POOLS[pool]
    path = Path(data_dir) / rel
    rows = read_alpaca(path, source=pool, require_output=False, skip_invalid=True)
    out = []
    for c in rows:
        if len(c.prompt) != 1 or len(c.prompt[0].content) > MAX_PROMPT_CHARS:
            continue
        index = c.where.rsplit("[", 1)[-1].rstrip("]")
        out.append(SourcePrompt(f"{pool}/{index}", c.prompt[0].content, c.response))
    return out


def subset(items: list[SourcePrompt], n: int, seed: int = 0) -> list[SourcePrompt]:
    """A seeded subset of at most n items, in their original order (the same on every machine)."""
    if len(items) <= n:
        return items
    keep = set(random.Random(f"{seed}:{items[0].pool}").sample(range(len(items)), n))
    return [x for i, x in enumerate(items) if i in keep]
