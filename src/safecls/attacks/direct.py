"""The "direct" attack: no attack, the request as the user turn (the baseline row of every table)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field

from safecls.attacks.base import ATTACKS, Attack, AttackItem, AttackRecord, make_record, record_key, user_turn
from safecls.config import StrictModel
from safecls.inference.config import DecodeConfig

# Prompts per generate call, in the target's batches: the records of a chunk are written (and counted in the progress
# log) before the next is generated, so a long benchmark shows progress and a killed run loses one chunk at most; a
# few batches per call still let the target sort prompts by length.
CHUNK_BATCHES = 4


class DirectConfig(StrictModel):
    decode: DecodeConfig = Field(default_factory=lambda: DecodeConfig(max_new_tokens=128))
    system_prompt: str | None = None


@ATTACKS.register("direct")
class DirectAttack(Attack):
    """No attack: the request as the user turn (the baseline row of every table)."""

    config_cls = DirectConfig

    def attack(self, target: Any, items: list[AttackItem], config: DirectConfig, done: set[str]) -> Iterator[AttackRecord]:
        todo = [it for it in items if record_key(self.name, it.id) not in done]
        step = CHUNK_BATCHES * max(1, getattr(target, "batch_size", 16))
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            msgs = [user_turn(it.prompt, config.system_prompt) for it in chunk]
            for it, m, g in zip(chunk, msgs, target.generate(msgs, config.decode), strict=True):
                yield make_record(self.name, it, "", m, g, seed=config.decode.seed,
                                  parameters={"decode": config.decode.model_dump()})

