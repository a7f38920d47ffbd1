"""The requests to attack: a JSONL/CSV/TXT file, or a benchmark by name (eval's loaders).

File rows: a request under one of PROMPT_KEYS, optionally `target` and a harmful reply under one of
`harmful_prefix`, `prefix`, `response`, `output`, and an `id`; or a `[user, assistant]` chat per line
(HEx-PHI harmful-prefix format); TXT: one request per line. Ids default to `<file stem>/<row>`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from safecls.attacks.base import AttackItem
from safecls.attacks.harmful_prefix import chat_pair
from safecls.data.files import parse_jsonl
from safecls.errors import DataError

PROMPT_KEYS = ("prompt", "goal", "instruction", "behavior", "Behavior", "question")
PREFIX_KEYS = ("harmful_prefix", "prefix", "response", "output")
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt")


def _item(path: Path, n: int, row: Any, line: int) -> AttackItem:
    if isinstance(row, list):
        pair = chat_pair(row)
        if pair is None:
            raise DataError(path, "a chat line needs a user and an assistant message", line=line)
        return AttackItem(id=f"{path.stem}/{n:04d}", prompt=pair[0], harmful_prefix=pair[1])
    if not isinstance(row, dict):
        raise DataError(path, f"expected an object or a chat list, got {type(row).__name__}", line=line)
    prompt = next((row[k] for k in PROMPT_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    if prompt is None:
        raise DataError(path, "no request in this row", line=line,
                        fix=f"each row needs one of {', '.join(PROMPT_KEYS)} (non-empty)")
    prefix = next((row[k] for k in PREFIX_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    target = row.get("target") if isinstance(row.get("target"), str) and row["target"].strip() else None
    item_id = str(row["id"]) if row.get("id") not in (None, "") else f"{path.stem}/{n:04d}"
    category = row.get("category") if isinstance(row.get("category"), str) else None
    return AttackItem(id=item_id, prompt=prompt.strip(), target=target, harmful_prefix=prefix, category=category)


def read_items(path: str | Path) -> list[AttackItem]:
    """Raises DataError for a missing or malformed file, or one with no rows."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(path, "no such file", fix="pass a JSONL/CSV/TXT file or a benchmark name (advbench, ...)")
    items: list[AttackItem] = []
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                items.append(_item(path, len(items), dict(row), reader.line_num))
    elif suffix == ".txt":
        items = [AttackItem(id=f"{path.stem}/{i:04d}", prompt=t.strip())
                 for i, t in enumerate(x for x in path.read_text(encoding="utf-8").splitlines() if x.strip())]
    else:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                rows = [(i + 1, r) for i, r in enumerate(json.loads(text))]
            except json.JSONDecodeError as e:
                raise DataError(path, f"invalid JSON ({e.msg})", line=e.lineno) from e
        else:
            rows = list(parse_jsonl(text, path, objects_only=False))
        items = [_item(path, i, row, line) for i, (line, row) in enumerate(rows)]
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise DataError(path, f"duplicate ids {dup}", fix="ids must be unique: a run resumes by id")
    return items


def load_items(data: str, *, data_root: str | Path | None = None, limit: int | None = None, seed: int = 0) -> list[AttackItem]:
    """`data`: a file path, or a benchmark name (then `data_root` is its folder or the shared data root; None
    downloads it). `limit`: the first N rows of a file, or a benchmark's seeded subset of N.

    Raises:
        DataError: the file or benchmark is missing, malformed, or empty.
    """
    path = Path(data).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES or path.is_file():
        items = read_items(path)
        items = items[:limit] if limit is not None else items
    else:
        # Benchmark loaders live in eval, a room above: this is the command-line entry point's reach, not the
        # library's (the attack classes never import eval).
        from safecls.data.benchmarks import load_benchmark

        rows = load_benchmark(data, data_root, limit=limit, seed=seed)
        items = [AttackItem(id=r.id, prompt=r.prompt, target=r.target, category=r.category,
                            harmful_prefix=r.extra.get("harmful_prefix") if isinstance(r.extra.get("harmful_prefix"), str) else None)
                 for r in rows]
    if not items:
        raise DataError(data, "the dataset is empty (no requests to attack)", fix="check the file, or raise --limit")
    return items
