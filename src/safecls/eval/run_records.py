"""The records of an evaluation run: `EvalRecord` (one judged generation), its stable key, reading and merging the
per-process logs, and adding verdicts to records (the runner judges new records and re-judges old ones with it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from safecls.errors import JudgeError
from safecls.eval.judges import Judge, Verdict
from safecls.io import ResultLog, atomic_write

logger = logging.getLogger(__name__)


class EvalRecord(BaseModel):
    """One judged generation: what reproduces it (attack record fields) and what each judge said."""

    model_config = ConfigDict(extra="forbid")

    key: str
    model: str
    attack: str  # the attack entry's label
    benchmark: str
    item_id: str
    sample: int = 0
    variant: str = ""
    attack_key: str = Field(description="the attack's own record key (what its `done` set holds)")
    category: str | None = None
    label: str | None = None
    reference: str | None = None
    prompt: str
    adversarial_input: str | list[dict[str, str]]
    prefill: str = ""
    response: str | None = None
    finish_reason: str | None = None
    trace: dict[str, Any] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    error: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    verdicts: dict[str, Verdict] = Field(default_factory=dict)
    p_comply: dict[str, float | None] = Field(default_factory=dict)
    judge_notes: dict[str, str] = Field(default_factory=dict)
    judge_errors: dict[str, str] = Field(default_factory=dict)
    completion_tokens: int = 0  # the response re-tokenized with the model's tokenizer (no special tokens)
    extra_tokens: int = 0  # generated, then rolled back by strategic decoding
    evaluations: int = 0  # [CLS] reads during generation
    wall_s: float = 0.0  # generation wall-time attributed to this record (0 for all but the last of a batch)


def record_key(model: str, attack: str, benchmark: str, item_id: str, variant: str, sample: int) -> str:
    return f"{model}|{attack}|{benchmark}|{item_id}|{variant}#{sample}" if variant else \
        f"{model}|{attack}|{benchmark}|{item_id}|{sample}"


def log_files(run_dir: Path) -> list[Path]:
    """records.jsonl, then the per-process logs of a sharded run that has not been merged yet."""
    return [run_dir / "records.jsonl", *sorted(run_dir.glob("records-rank*.jsonl"))]


def read_records(run_dir: str | Path) -> list[EvalRecord]:
    """Every record of a run (merged log first, then per-rank logs), one per key (the first one written)."""
    seen: dict[str, EvalRecord] = {}
    for path in log_files(Path(run_dir)):
        for r in ResultLog(path, EvalRecord):
            seen.setdefault(r.key, r)
    return list(seen.values())


def merge_logs(run_dir: Path) -> list[EvalRecord]:
    """Fold records-rank<k>.jsonl into records.jsonl (atomically, then delete them); return every record."""
    records = read_records(run_dir)
    parts = sorted(run_dir.glob("records-rank*.jsonl"))
    if parts:
        atomic_write(run_dir / "records.jsonl", "".join(r.model_dump_json() + "\n" for r in records))
        for p in parts:
            p.unlink()
    return records


def judge_into(records: list[EvalRecord], judges: dict[str, Judge]) -> int:
    """Fill each record's missing verdicts in place; return how many verdicts were added. A judge that raises
    JudgeError leaves its verdicts missing and the message in judge_errors (a failure is never a verdict)."""
    added = 0
    for name, judge in judges.items():
        todo = [r for r in records if r.response is not None and name not in r.verdicts]
        if not todo:
            continue
        try:
            got = judge.judge([r.prompt for r in todo], [r.response for r in todo])
        except JudgeError as e:  # a bug in a judge (any other exception) still raises
            logger.warning("judge %s failed on %d records (%s); they carry judge_errors", name, len(todo), e)
            for r in todo:
                r.judge_errors[name] = f"{type(e).__name__}: {e}"
            continue
        for r, j in zip(todo, got, strict=True):
            r.verdicts[name], r.p_comply[name], r.judge_notes[name] = j.verdict, j.p_comply, j.note
            r.judge_errors.pop(name, None)
            added += 1
    return added


def rejudge(run_dir: Path, judges: dict[str, Judge], batch_size: int) -> int:
    """Judge the records of earlier runs that lack a verdict of a configured judge (it failed then, or was added to
    the config since); rewrite records.jsonl atomically when any verdict was added. Nothing is regenerated."""
    records = merge_logs(run_dir)
    stale = [r for r in records if r.response is not None and any(j not in r.verdicts for j in judges)]
    if not stale:
        return 0
    added = sum(judge_into(stale[i:i + batch_size], judges) for i in range(0, len(stale), batch_size))
    if added:
        atomic_write(run_dir / "records.jsonl", "".join(r.model_dump_json() + "\n" for r in records))
        logger.info("%s: added %d verdicts to records of an earlier run", run_dir, added)
    return added


class DoneKeys:
    """Keys already written: the run's keys, and the attack's own keys per model x attack x benchmark x sample."""

    def __init__(self, records: list[EvalRecord]):
        self.keys: set[str] = set()
        self.by_group: dict[tuple[str, str, str, int], set[str]] = {}
        for r in records:
            self.add(r)

    def add(self, r: EvalRecord) -> None:
        self.keys.add(r.key)
        self.by_group.setdefault((r.model, r.attack, r.benchmark, r.sample), set()).add(r.attack_key)

    def attack_keys(self, model: str, attack: str, benchmark: str, sample: int) -> set[str]:
        return set(self.by_group.get((model, attack, benchmark, sample), ()))
