"""No training prompt may be an evaluation prompt, however reworded: near-duplicates by sentence embedding.

Every recipe prompt (shared pools and the hand-written contrast pairs) is compared with every prompt of the
evaluation sets found in the data folder (AdvBench, MaliciousInstruct, XSTest, and HarmBench / HEx-PHI / JBB when
present) by cosine similarity of all-MiniLM-L6-v2 sentence embeddings; at or above `COSINE` the prompt is dropped.
Exact matches after normalisation are dropped whatever their cosine. The result is cached by content hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from safecls.data.benchmarks import load_benchmark
from safecls.data.embeddings import sentence_embeddings
from safecls.errors import DataError

logger = logging.getLogger(__name__)

COSINE = 0.8  # shared pools: 0.8 pairs rewordings of one request ("steal a car" / "how to steal a car at night")
# hand-written contrast pairs imitate XSTest's kinds of prompts (homonyms, safe targets, ...), so anything closer than
# 0.6 to an evaluation prompt goes: at 0.6-0.7 they are still twins of XSTest items ("steal the show", "gut a fish")
CONTRAST_COSINE = 0.6
EVAL_SETS = ("advbench", "maliciousinstruct", "xstest", "harmbench", "hex-phi", "jbb")


def normalise(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def evaluation_prompts(data_dir: str | Path) -> dict[str, str]:
    """{benchmark/id: prompt} of every evaluation set present in `data_dir`."""
    out = {}
    for name in EVAL_SETS:
        try:
            items = load_benchmark(name, data_dir)
        except DataError:
            logger.info("overlap: %s is not in %s; not checked", name, data_dir)
            continue
        out.update({it.id: it.prompt for it in items})
    return out


def nearest_evaluation(prompts: Sequence[str], data_dir: str | Path,
                       cache: str | Path | None = None) -> list[tuple[str, float]]:
    """Per prompt: the closest evaluation prompt's id and its cosine (1.0 for an exact normalised match)."""
    ev = evaluation_prompts(data_dir)
    ids, texts = list(ev), list(ev.values())
    key = hashlib.sha256(json.dumps([list(prompts), texts]).encode()).hexdigest()[:16]
    path = Path(cache) / f"nearest-{key}.json" if cache is not None else None
    if path is not None and path.is_file():
        return [tuple(x) for x in json.loads(path.read_text())]
    if not texts:
        return [("", 0.0)] * len(prompts)
    exact = {normalise(t): i for i, t in zip(ids, texts, strict=True)}
    sims = sentence_embeddings(list(prompts)) @ sentence_embeddings(texts).T
    out = []
    for i, p in enumerate(prompts):
        j = int(sims[i].argmax())
        out.append((exact[normalise(p)], 1.0) if normalise(p) in exact else (ids[j], round(float(sims[i, j]), 4)))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out))
    return out
