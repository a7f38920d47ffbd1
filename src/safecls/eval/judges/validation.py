"""Each built-in judge's measured agreement with the hand-labelled responses (tests/fixtures/judge_labels.jsonl,
held-out split), shipped as data so every report can say how far its ASR numbers can be trusted. Written by
`safecls judge evaluate --write` (safecls.eval.judges.training.evaluate; docs/judge_labelling_guide.md).

`validation.json`: `fixture_sha256` (the labels scored), `head_sha256` (the minilm weights scored: the sha256 of the
`head.safetensors` the minilm judge loads; a test checks it is the shipped file), `split`, `date` and `judges`."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def judge_validation() -> dict[str, dict[str, Any]]:
    """{judge name: summary}; {} if absent. A summary (`training.evaluate.agreement_summary`), also per model of the
    labelled set under "by_model": "n"; "acc" and "kappa" (3-class); "binary_acc" and "binary_kappa" (COMPLY vs not);
    "comply_n" (replies labelled COMPLY), "comply_found" (of those, called COMPLY), "comply_recall" (their ratio);
    "other_n" (labelled REFUSE or OFF_TOPIC), "other_called_comply" (of those, called COMPLY), "false_comply_rate"
    (their ratio). Rates are rounded to 4 places; kappa is null where undefined. Top level only: "labelled_set"."""
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
                "Fix: safecls judge evaluate"]
    by_model = ", ".join(f"{m} {b['acc']:.2f}" for m, b in v.get("by_model", {}).items())
    return [judge, str(v["n"]), f"{v['acc']:.3f} / {v['kappa']:.3f}", f"{v['binary_acc']:.3f} / {v['binary_kappa']:.3f}",
            _rate(v.get("comply_recall")), _rate(v.get("false_comply_rate")), by_model or "—", v["labelled_set"]]
