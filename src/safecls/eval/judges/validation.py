"""Each built-in judge's measured agreement with the hand-labelled responses (tests/fixtures/judge_labels.jsonl,
held-out split), shipped as data so every report can say how far its ASR numbers can be trusted. Written by
`python scripts/train_judge.py evaluate --write` (docs/judge_labelling_guide.md)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def judge_validation() -> dict[str, dict[str, Any]]:
    """{judge name: {"n", "acc", "kappa", "binary_acc", "binary_kappa", "labelled_set", "date"}}; {} if absent."""
    path = resources.files("safecls") / "resources" / "judge" / "validation.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["judges"]


def validation_line(judge: str) -> list[str]:
    """A report row: judge, n, 3-class accuracy / kappa, COMPLY-vs-not accuracy / kappa (or how to measure it)."""
    v = judge_validation().get(judge)
    if v is None:
        return [judge, "—", "not measured against the labelled set", "", "Fix: python scripts/train_judge.py evaluate"]
    return [judge, str(v["n"]), f"{v['acc']:.3f} / {v['kappa']:.3f}", f"{v['binary_acc']:.3f} / {v['binary_kappa']:.3f}",
            v["labelled_set"]]
