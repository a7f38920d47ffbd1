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

import numpy as np

from safecls.data.benchmarks import load_benchmark
from safecls.data.embeddings import sentence_embeddings
from safecls.errors import DataError

logger = logging.getLogger(__name__)

COSINE = 0.8  # measured: 0.8 pairs rewordings of one request ("kill a Python process" / "...a frozen process")
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


def near_evaluation(prompts: Sequence[str], data_dir: str | Path, cache: str | Path | None = None,
                    cosine: float = COSINE) -> list[tuple[str, float] | None]:
    """Per prompt: (the closest evaluation prompt's id, its cosine) when at or above `cosine` or an exact normalised
    match; else None."""
    ev = evaluation_prompts(data_dir)
    ids, texts = list(ev), list(ev.values())
    key = hashlib.sha256(json.dumps([list(prompts), texts, cosine]).encode()).hexdigest()[:16]
    if cache is not None and (Path(cache) / f"overlap-{key}.json").is_file():
        return [tuple(x) if x else None for x in json.loads((Path(cache) / f"overlap-{key}.json").read_text())]
    exact = {normalise(t): i for i, t in zip(ids, texts, strict=True)}
    a = sentence_embeddings(list(prompts))
    b = sentence_embeddings(texts)
    sims = a @ b.T if len(texts) else np.zeros((len(prompts), 0))
    out: list[tuple[str, float] | None] = []
    for i, p in enumerate(prompts):
        j = int(sims[i].argmax()) if sims.shape[1] else -1
        if normalise(p) in exact:
            out.append((exact[normalise(p)], 1.0))
        elif j >= 0 and sims[i, j] >= cosine:
            out.append((ids[j], round(float(sims[i, j]), 4)))
        else:
            out.append(None)
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        (Path(cache) / f"overlap-{key}.json").write_text(json.dumps(out))
    return out
