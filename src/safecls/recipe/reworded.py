"""sft_{train,test}_reworded.jsonl: the split's requests asked in the other grammatical form (data/forms.py), for the
head's re-fit (train) and its held-out AUC (test). Request-only records: no reply is trained on.

Every harmful request that has another form gets it, and REWORDED_BENIGN of the benign ones: benign requests are 2.6
times as many, so both sides get about as many "How to ...?" and "Explain how to ..." reads. A reworded request can
sit nearer an evaluation prompt than its original, so the overlap check runs again on the new text.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path

from safecls.data.files import iter_jsonl
from safecls.data.forms import other_form
from safecls.io import atomic_write
from safecls.recipe.overlap import COSINE, nearest_evaluation

logger = logging.getLogger(__name__)

REWORDED_BENIGN = 0.35
SUFFIX = " (reworded)"


def write_reworded(sft_file: str | Path, out_file: str | Path, data_dir: str | Path, cache: str | Path | None = None,
                   seed: int = 0) -> dict[str, int]:
    """Write `out_file` from `sft_file`'s requests; returns its counts by source/label (and the number dropped as
    near an evaluation prompt)."""
    rng = random.Random(seed)
    rows = []
    for _, r in iter_jsonl(sft_file):
        request = next(m["content"] for m in r["messages"] if m["role"] == "user")
        turned = other_form(request, rng)
        if turned is not None and (r["label"] == 1 or rng.random() < REWORDED_BENIGN):
            rows.append({"messages": [{"role": "user", "content": turned}], "label": r["label"],
                         "source": f"{r.get('source', 'sft')}{SUFFIX}"})
    near = nearest_evaluation([r["messages"][0]["content"] for r in rows], data_dir, cache)
    kept = [r for r, (_, cos) in zip(rows, near, strict=True) if cos < COSINE]
    counts = dict(Counter(f"{r['source']}/{r['label']}" for r in kept))
    counts["near_evaluation"] = len(rows) - len(kept)
    atomic_write(out_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    logger.info("reworded requests: %s -> %s %s", sft_file, out_file, counts)
    return counts


def write_reworded_splits(data: str | Path, data_dir: str | Path, cache: str | Path | None = None,
                          seed: int = 0) -> dict[str, dict[str, int]]:
    """sft_train_reworded.jsonl and sft_test_reworded.jsonl beside the recipe's sft files in `data`."""
    data = Path(data)
    return {split: write_reworded(data / f"sft_{split}.jsonl", data / f"sft_{split}_reworded.jsonl", data_dir, cache,
                                  seed) for split in ("train", "test")}
