"""GCG transfer: append saved adversarial suffixes (optimised on other models) to the requests. Black box.

Suffix files: the SmoothLLM/llm-attacks JSON `{"goal": [...], "target": [...], "controls": [...]}`
(../shared/data/attacks/gcg/*_behaviors.json), JSONL rows with a `suffix` or `control` (and optionally `goal`),
or plain text with one suffix per line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from safecls.attacks.base import ATTACKS, Attack, AttackItem, AttackRecord, make_record, record_key, user_turn
from safecls.config import StrictModel
from safecls.data.files import parse_jsonl
from safecls.errors import DataError
from safecls.inference.config import DecodeConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Suffix:
    text: str
    goal: str | None = None  # the request it was optimised for, where known


def read_suffixes(path: str | Path) -> list[Suffix]:
    """Raises DataError for a missing file or one without suffixes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(path, "suffix file not found", fix="pass e.g. ../shared/data/attacks/gcg/llama2_behaviors.json")
    text = path.read_text(encoding="utf-8")
    out: list[Suffix] = []
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, f"invalid JSON ({e.msg})", line=e.lineno) from e
        controls = obj.get("controls") if isinstance(obj, dict) else None
        if not isinstance(controls, list) or not all(isinstance(c, str) for c in controls):
            raise DataError(path, "expected an object with a 'controls' list of suffix strings",
                            fix='use the llm-attacks/SmoothLLM format {"goal": [...], "controls": [...]}')
        goals = obj.get("goal") if isinstance(obj.get("goal"), list) else [None] * len(controls)
        if len(goals) != len(controls):
            raise DataError(path, f"{len(goals)} goals but {len(controls)} controls")
        out = [Suffix(c, g) for c, g in zip(controls, goals)]
    elif path.suffix.lower() == ".jsonl":
        for n, row in parse_jsonl(text, path, objects_only=False):
            s = row.get("suffix", row.get("control")) if isinstance(row, dict) else None
            if not isinstance(s, str):
                raise DataError(path, "each line needs a 'suffix' (or 'control') string", line=n)
            out.append(Suffix(s, row.get("goal")))
    else:
        out = [Suffix(line) for line in text.splitlines() if line.strip()]
    if not out:
        raise DataError(path, "no suffixes in the file")
    return out


class TransferConfig(StrictModel):
    suffixes_file: Path = Field(description="Saved GCG suffixes (see module doc).")
    mode: Literal["all", "matching"] = Field("all", description="all: every suffix on every request; matching: only "
                                             "the suffix optimised for the same request (items without one skipped).")
    separator: str = Field(" ", description="Between the request and the suffix.")
    decode: DecodeConfig = Field(default_factory=lambda: DecodeConfig(max_new_tokens=128))
    system_prompt: str | None = None


@ATTACKS.register("gcg-transfer")
class TransferAttack(Attack):
    """Saved GCG suffixes (optimised on other models) appended to each request."""

    config_cls = TransferConfig

    def make_config(self, config: Any) -> Any:
        if config is None:
            raise DataError("<gcg-transfer attack config>", "suffixes_file is required",
                            fix="--set suffixes_file=../shared/data/attacks/gcg/llama2_behaviors.json")
        return super().make_config(config)

    def attack(self, target: Any, items: list[AttackItem], config: TransferConfig, done: set[str]) -> Iterator[AttackRecord]:
        suffixes = read_suffixes(config.suffixes_file)
        for item in items:
            if config.mode == "matching":
                chosen = [(i, s) for i, s in enumerate(suffixes) if s.goal and s.goal.strip() == item.prompt.strip()]
                if not chosen:
                    logger.info("gcg-transfer: no suffix was optimised for %s; skipped", item.id)
            else:
                chosen = list(enumerate(suffixes))
            todo = [(i, s) for i, s in chosen if record_key(self.name, item.id, f"s{i}") not in done]
            if not todo:
                continue
            msgs = [user_turn(item.prompt + config.separator + s.text, config.system_prompt) for _, s in todo]
            gens = target.generate(msgs, config.decode)
            for (i, s), m, g in zip(todo, msgs, gens):
                yield make_record(self.name, item, f"s{i}", m, g, seed=config.decode.seed,
                                  parameters={"suffix_index": i, "suffixes_file": str(config.suffixes_file),
                                              "decode": config.decode.model_dump()},
                                  extra={"suffix": s.text, "suffix_goal": s.goal})
