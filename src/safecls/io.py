"""Run-directory files: atomic writes, and an append-only JSONL log that resumes by key."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


def atomic_write(path: str | Path, text: str | bytes) -> None:
    """A reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class ResultLog(Generic[R]):
    """Append-only JSONL of pydantic records with a stable `.key`; a kill loses at most one record."""

    def __init__(self, path: str | Path, record_cls: type[R]):
        self.path = Path(path)
        self.record_cls = record_cls
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __iter__(self) -> Iterator[R]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            lines = f.readlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield self.record_cls.model_validate_json(line)
            except ValueError:
                if n == len(lines):  # torn last line: the process was killed mid-write
                    logger.warning("%s:%d: skipping a torn last record (killed mid-write?)", self.path, n)
                    continue
                raise

    def records(self) -> list[R]:
        return list(self)

    def done_keys(self) -> set[str]:
        return {r.key for r in self}  # type: ignore[attr-defined]

    def append(self, record: R) -> None:
        self._repair_torn_tail()
        with self.path.open("a", encoding="utf-8") as f:
            f.write(record.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _repair_torn_tail(self) -> None:
        # A torn tail has no newline; appending after it would glue two records into one bad line.
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = self.path.read_bytes()
                f.seek(data.rfind(b"\n") + 1)
                f.truncate()
