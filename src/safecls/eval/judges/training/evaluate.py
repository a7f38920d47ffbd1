"""How far the judges agree with the hand labels: per split of the fixture, and on the held-out split for reports.

`evaluate` is the only reader of the held-out labels. Its document (`validation.json`, read by
`safecls.eval.judges.validation`) gives, per judge and per model of the labelled set, agreement (3-class and
COMPLY-vs-not) and the counts behind the two error rates that move an ASR: `comply_found` of `comply_n` replies
labelled COMPLY called COMPLY, and `other_called_comply` of the `other_n` others called COMPLY. `head_sha256` names
the minilm weights it scored, `fixture_sha256` the labels.

`suspects` lists the training rows the trained judge fits worst, for a blind re-reading of their labels.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safecls.eval.judges.training.sources import (
    COMPLY,
    LABELS,
    fixture_rows,
    labelled_model_rows,
    read_jsonl,
    read_line_labels,
    require_no_heldout,
)
from safecls.io import atomic_write

JUDGES = ("minilm", "keyword", "keyword-harmbench")
TABLE_HEADER = f"{'judge':18s} {'split':8s} {'n':>4s} {'acc':>6s} {'kappa':>6s} {'bin acc':>8s} {'bin kappa':>9s}"


def _r4(x: float) -> float | None:
    return None if x != x else round(x, 4)  # kappa is NaN (undefined) when both raters used one label: JSON null


def agreement_summary(want: Sequence[str], got: Sequence[str]) -> dict[str, Any]:
    """What a reader of an ASR needs from a judge's validation: agreement (3-class and COMPLY-vs-not), and the two
    error rates that move ASR with their counts: the share of labelled COMPLY it finds (`comply_found` /
    `comply_n`, recall) and of the rest it calls COMPLY (`other_called_comply` / `other_n`)."""
    from safecls.eval.agreement import cohen_kappa, percent_agreement

    wb, gb = [w == COMPLY for w in want], [g == COMPLY for g in got]
    pos = [g for w, g in zip(wb, gb) if w]
    neg = [g for w, g in zip(wb, gb) if not w]
    return {"n": len(want), "acc": _r4(percent_agreement(want, got)), "kappa": _r4(cohen_kappa(want, got)),
            "binary_acc": _r4(percent_agreement(wb, gb)), "binary_kappa": _r4(cohen_kappa(wb, gb)),
            "comply_n": len(pos), "comply_found": sum(pos),
            "comply_recall": round(sum(pos) / len(pos), 4) if pos else None,
            "other_n": len(neg), "other_called_comply": sum(neg),
            "false_comply_rate": round(sum(neg) / len(neg), 4) if neg else None}


def agreement_line(name: str, split: str, want: Sequence[str], got: Sequence[str]) -> str:
    """One row under TABLE_HEADER."""
    from safecls.eval.agreement import cohen_kappa, percent_agreement

    wb, gb = [w == COMPLY for w in want], [g == COMPLY for g in got]
    return (f"{name:18s} {split:8s} {len(want):4d} {percent_agreement(want, got):6.3f} {cohen_kappa(want, got):6.3f}"
            f" {percent_agreement(wb, gb):8.3f} {cohen_kappa(wb, gb):9.3f}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(slots=True)
class Evaluation:
    table: list[str]  # TABLE_HEADER rows: every judge on dev and held-out, then the second reading if given
    details: list[str]  # the minilm judge's confusion and disagreements per split
    document: dict[str, Any]  # validation.json
    fixture_counts: dict[str, int] = field(default_factory=dict)  # "model/label": rows


def evaluate(fixture: Path, data_dir: Path, head_dir: Path, *, second_reading: Path | None = None) -> Evaluation:
    """Each judge (JUDGES; minilm from `head_dir`) against the fixture's labels, per split; the document holds the
    held-out numbers. `second_reading`: '<line> <C|R|O>' labels by an independent reader (the human ceiling)."""
    from safecls.eval.judges import JUDGES as REGISTRY

    rows = fixture_rows(fixture, data_dir, None)
    n_models = len({r["model"] for r in rows})
    judges = {name: REGISTRY.get(name)(head_dir=head_dir) if name == "minilm" else REGISTRY.get(name)()
              for name in JUDGES}
    table, details, validation = [], [], {}
    for name, judge in judges.items():
        got_all = [j.verdict.value for j in judge.judge([r["prompt"] for r in rows], [r["response"] for r in rows])]
        for split in ("dev", "heldout"):
            idx = [i for i, r in enumerate(rows) if r["split"] == split]
            want, got = [rows[i]["label"] for i in idx], [got_all[i] for i in idx]
            table.append(agreement_line(name, split, want, got))
            if name == "minilm":
                details.append(f"{split} confusion (label, verdict): {dict(Counter(zip(want, got)))}")
                details += [f"{i} {rows[i]['id']} {rows[i]['model']} {rows[i]['attack']} label={rows[i]['label']} "
                            f"got={got_all[i]}: {rows[i]['response'][:150]!r}"
                            for i in idx if got_all[i] != rows[i]["label"]]
            if split == "heldout":
                models = sorted({rows[i]["model"] for i in idx})
                validation[name] = agreement_summary(want, got) | {
                    "labelled_set": f"{len(rows)} responses, {n_models} models (held-out {len(idx)})",
                    "by_model": {m: agreement_summary([w for w, i in zip(want, idx) if rows[i]["model"] == m],
                                                      [g for g, i in zip(got, idx) if rows[i]["model"] == m])
                                 for m in models}}
    if second_reading is not None:
        second = read_line_labels(second_reading)
        for split in ("dev", "heldout"):
            idx = [i for i, r in enumerate(rows) if r["split"] == split and i in second]
            table.append(agreement_line("second reading", split, [rows[i]["label"] for i in idx],
                                        [second[i] for i in idx]))
    document = {"fixture_sha256": sha256_of(fixture), "head_sha256": sha256_of(Path(head_dir) / "head.safetensors"),
                "split": "heldout", "date": datetime.date.today().isoformat(), "judges": validation}
    counts = Counter(f"{r['model']}/{r['label']}" for r in rows)
    return Evaluation(table, details, document, dict(sorted(counts.items())))


def write_validation(document: dict[str, Any], path: Path) -> None:
    atomic_write(path, json.dumps(document, indent=1) + "\n")


def suspects(head_dir: Path, data_dir: Path, train_labels: Path | None = None, *,
             below: float = 0.2) -> list[dict[str, Any]]:
    """Training rows whose hand label the judge, trained on them, gives less than `below`: for a blind second and
    third reading (the rows hold no labels). A label is changed only where both blind readings agree against it:
    these rows are where a reader's mistake would teach the judge most, and where the judge's own limits show."""
    from safecls.eval.judges.minilm import MiniLMJudge
    from safecls.eval.judges.training.sources import default_train_labels

    path = Path(train_labels) if train_labels is not None else default_train_labels()
    rows, raw = labelled_model_rows(data_dir, path), read_jsonl(path)
    require_no_heldout(rows, "suspects' rows")
    scored = MiniLMJudge(head_dir).probs([r.prompt for r in rows], [r.response for r in rows])
    picked = [k for k, (r, (_, p)) in enumerate(zip(rows, scored)) if p[LABELS.index(r.label)] < below]
    return [{"n": n, "line": k, "id": raw[k]["id"], "attack": raw[k]["attack"], "prompt": rows[k].prompt,
             "response": rows[k].response} for n, k in enumerate(picked)]
