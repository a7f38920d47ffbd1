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
    """{judge name: {"n", "acc", "kappa", "binary_acc", "binary_kappa", "comply_recall", "false_comply_rate", "by_model",
    "labelled_set"}}; {} if absent (`scripts/train_judge.py agreement_summary` says what each means)."""
    path = resources.files("safecls") / "resources" / "judge" / "validation.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["judges"]


VALIDATION_HEADERS = ["judge", "n", "accuracy / kappa", "COMPLY-vs-not accuracy / kappa", "finds real COMPLY",
                      "calls other COMPLY", "accuracy by model", "labelled set"]


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def validation_line(judge: str) -> list[str]:
    """A report row (VALIDATION_HEADERS): agreement, the two error rates that move an ASR (recall of labelled COMPLY,
    false COMPLY among the rest) and accuracy per model of the labelled set — or how to measure a judge without
    numbers."""
    v = judge_validation().get(judge)
    if v is None:
        return [judge, "—", "not measured against the labelled set", "", "", "", "",
                "Fix: python scripts/train_judge.py evaluate"]
    by_model = ", ".join(f"{m} {b['acc']:.2f}" for m, b in v.get("by_model", {}).items())
    return [judge, str(v["n"]), f"{v['acc']:.3f} / {v['kappa']:.3f}", f"{v['binary_acc']:.3f} / {v['binary_kappa']:.3f}",
            _rate(v.get("comply_recall")), _rate(v.get("false_comply_rate")), by_model or "—", v["labelled_set"]]
