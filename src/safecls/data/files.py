"""Row readers for data files: JSONL (the one JSONL reader of the project) and CSV. Every malformed row raises
DataError naming the file and line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safecls.errors import DataError


def parse_jsonl(text: str, where: str | Path, *, objects_only: bool = True) -> Iterator[tuple[int, Any]]:
    """(line number, value) per non-blank line of JSONL `text`; a malformed line raises DataError naming where and
    which line. `objects_only`: every line must be a JSON object (the usual case)."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(where, f"not valid JSON ({e.msg} at column {e.colno})", line=n,
                            fix="one JSON object per line") from None
        if objects_only and not isinstance(obj, dict):
            raise DataError(where, f"expected a JSON object, got {type(obj).__name__}", line=n)
        yield n, obj


def iter_jsonl(path: str | Path, *, objects_only: bool = True) -> Iterator[tuple[int, Any]]:
    """(line number, value) per non-blank line of a JSONL file (see parse_jsonl): the one JSONL reader."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file", fix="check the path (relative paths are taken from the current directory)")
    yield from parse_jsonl(path.read_text(encoding="utf-8"), path, objects_only=objects_only)


def csv_rows(path: Path, *, header: bool = True) -> Iterator[tuple[int, dict[str, str] | list[str]]]:
    """(line number, row). newline="" lets csv handle CRLF, LF and quoted newlines in one file."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f) if header else csv.reader(f)
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason} at byte {e.start})", fix="re-download the file") from e
    except csv.Error as e:
        raise DataError(path, f"malformed CSV ({e})") from e


def require_columns(path: Path, row: dict[str, str], line: int, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise DataError(path, f"column(s) {missing} missing from the header", line=1,
                        fix=f"expected columns {list(columns)}; got {list(row)}")
    if None in row:  # DictReader puts surplus fields under the key None
        raise DataError(path, f"{len(row) - 1 + len(row[None])} fields, header has {len(row) - 1}", line=line,
                        fix="quote fields that contain commas")
    empty = [c for c in columns if row[c] is None or not row[c].strip()]
    if empty:
        raise DataError(path, f"field(s) {empty} empty or missing", line=line)


def require_field(path: Path, obj: dict[str, Any], key: str, line: int, kind: type = str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise DataError(path, f"field {key!r} missing or not a non-empty {kind.__name__} (got {value!r:.60})",
                        line=line)
    return value
