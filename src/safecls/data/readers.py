"""Readers for the SFT source formats. Each returns `Candidate`s; the mixture builder labels them.

| format                | file                                       | fields                                          |
|-----------------------|--------------------------------------------|-------------------------------------------------|
| `alpaca`              | JSON array or JSONL                        | instruction, input, output, optional history    |
| `safety-tuned-llamas` | JSON array (Bianchi et al. 2024)           | instruction, input (empty), output (safe reply) |
| `alert`               | JSONL (Tedeschi et al. 2024)               | id, category, prompt ("### Instruction:\\n...\\n### Response:\\n") |
| `jsonl`               | our records (sft_records.py)               | messages, label, source                         |

`input` is appended to `instruction` after a blank line (Alpaca's own prompt layout). LIMA's `history`
([[user, assistant], ...]) becomes earlier turns. A `harmful_response` field, where a file has one,
is kept for the Qi et al. augmentation (augment.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from safecls.data.files import parse_jsonl
from safecls.data.sft_records import Candidate, Message, read_sft_jsonl
from safecls.errors import DataError

logger = logging.getLogger(__name__)

Format = Literal["alpaca", "safety-tuned-llamas", "alert", "jsonl"]


def _load_rows(path: Path) -> list[tuple[str, dict]]:
    """JSON array or JSONL -> [(where, row)]; a broken file raises DataError naming file and line."""
    if not path.is_file():
        raise DataError(path, "no such file", fix="check the path (relative paths are taken from the current directory)")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, f"not valid JSON ({e.msg} at column {e.colno})", line=e.lineno) from None
        return [(f"{path}[{i}]", r) for i, r in enumerate(rows)]
    return [(f"{path}:{n}", row) for n, row in parse_jsonl(text, path, objects_only=False)]


def _field(row: object, where: str, key: str, *, required: bool = True) -> str | None:
    if not isinstance(row, dict):
        raise DataError(where, f"expected a JSON object, got {type(row).__name__}")
    value = row.get(key)
    if value is None:
        if required:
            raise DataError(where, f"field {key!r} is missing", fix=f"each row needs {key!r}")
        return None
    if not isinstance(value, str):
        raise DataError(where, f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def read_alpaca(path: str | Path, *, source: str, require_output: bool = True, skip_invalid: bool = False) -> list[Candidate]:
    """Alpaca-style rows. An empty `output` raises DataError when `require_output` (benign data needs
    its response), is skipped with a log line when `skip_invalid`, and otherwise becomes None."""
    path = Path(path)
    out = []
    for where, row in _load_rows(path):
        instruction = _field(row, where, "instruction") or ""
        extra_input = _field(row, where, "input", required=False) or ""
        output = _field(row, where, "output", required=False)
        if not instruction.strip():
            if skip_invalid:
                logger.info("%s: skipped: empty instruction", where)
                continue
            raise DataError(where, "the instruction is empty", fix="drop the row, or set skip_invalid: true")
        if output is None or not output.strip():
            if skip_invalid:
                logger.info("%s: skipped: empty output", where)
                continue
            if require_output:
                raise DataError(where, "the response ('output') is empty",
                                fix="drop the row, or set skip_invalid: true for this source")
            output = None
        prompt: list[Message] = []
        for turn in row.get("history") or []:
            if not (isinstance(turn, list | tuple) and len(turn) == 2):
                raise DataError(where, f"'history' entries must be [user, assistant] pairs, got {turn!r}")
            prompt += [Message(role="user", content=str(turn[0])), Message(role="assistant", content=str(turn[1]))]
        user = instruction.strip() + (f"\n\n{extra_input.strip()}" if extra_input.strip() else "")
        prompt.append(Message(role="user", content=user))
        out.append(Candidate(prompt=prompt, response=output, source=source, where=where,
                             category=row.get("category"), harmful_response=row.get("harmful_response")))
    return out


def read_safety_tuned(path: str | Path, *, source: str, skip_invalid: bool = False) -> list[Candidate]:
    """Safety-Tuned LLaMAs (`safety_only_data_Instructions.json`): Alpaca rows whose `output` is a
    gpt-3.5 safe reply; it may be a refusal or a safe answer (the builder keeps only refusals)."""
    return read_alpaca(path, source=source, require_output=False, skip_invalid=skip_invalid)


_ALERT_PROMPT = re.compile(r"^\s*### Instruction:\s*\n(?P<body>.*?)(?:\n\s*### Response:\s*)?$", re.DOTALL)


def read_alert(path: str | Path, *, source: str, skip_invalid: bool = False) -> list[Candidate]:
    """ALERT JSONL: prompt-only malicious requests wrapped in '### Instruction:' ... '### Response:'."""
    path = Path(path)
    out = []
    for where, row in _load_rows(path):
        text = _field(row, where, "prompt") or ""
        m = _ALERT_PROMPT.match(text)
        body = m.group("body").strip() if m else ""
        if not body:
            if skip_invalid:
                logger.info("%s: skipped: no instruction in the prompt", where)
                continue
            raise DataError(where, f"prompt has no '### Instruction:' body (got {text[:60]!r})",
                            fix="ALERT prompts look like '### Instruction:\\n<request>\\n### Response:\\n'")
        out.append(Candidate(prompt=[Message(role="user", content=body)], response=None, source=source,
                             where=where, category=row.get("category"),
                             harmful_response=row.get("harmful_response"), extra={"id": row.get("id")}))
    return out


def read_records(path: str | Path, *, source: str | None = None, skip_invalid: bool = False) -> list[Candidate]:
    """Our JSONL records. Each keeps its own `source` unless `source` overrides it."""
    return [Candidate(prompt=list(ex.prompt_messages), response=ex.response, source=source or ex.source,
                      where=f"{path}", extra={"label": ex.label})
            for ex in read_sft_jsonl(path)]


READERS: dict[str, Callable[..., list[Candidate]]] = {
    "alpaca": read_alpaca,
    "safety-tuned-llamas": read_safety_tuned,
    "alert": read_alert,
    "jsonl": read_records,
}
