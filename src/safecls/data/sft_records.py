"""The SFT record safecls writes and reads, one JSON object per line:

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "label": 0 | 1, "source": "lima"}

`label` is the [CLS] target of the conversation's prompt (0 benign, 1 malicious). The last message is
the assistant response that L_sft trains on. An optional `masked_prefix_chars` (> 0, Qi et al. 2024
augmentation only) counts the leading characters of that response that are context, not a target.
Unknown extra keys are ignored (files may carry an `id` or `category`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safecls.data.files import iter_jsonl
from safecls.errors import DataError
from safecls.io import atomic_write

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Role
    content: str


class SFTExample(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    messages: list[Message] = Field(min_length=2)
    label: Literal[0, 1]
    source: str = Field(min_length=1)
    masked_prefix_chars: int = Field(0, ge=0, description="Leading chars of the response with no SFT loss (Qi et al.).")

    @property
    def prompt_messages(self) -> list[Message]:
        return self.messages[:-1]

    @property
    def response(self) -> str:
        return self.messages[-1].content

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=False, exclude={"masked_prefix_chars"} if not self.masked_prefix_chars else None)


def check_example(ex: SFTExample, path: str | Path, line: int | None) -> SFTExample:
    """The rules a record must meet before training: a user turn, and a non-empty assistant reply last."""
    if not any(m.role == "user" for m in ex.messages):
        raise DataError(path, "no 'user' message", line=line, fix="each record needs a user turn before the reply")
    last = ex.messages[-1]
    if last.role != "assistant":
        raise DataError(path, f"the last message has role {last.role!r}", line=line,
                        fix="end 'messages' with the assistant response to train on")
    if not last.content.strip():
        raise DataError(path, "the assistant response is empty", line=line,
                        fix="drop the row, or give it a response (malicious prompts can omit it in prompt-only formats)")
    if ex.masked_prefix_chars >= len(last.content):
        raise DataError(path, f"masked_prefix_chars {ex.masked_prefix_chars} covers the whole response", line=line,
                        fix="it must be shorter than the response")
    return ex


def _pydantic_problem(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(map(str, e["loc"])) or "(record)"
    if e["type"] == "missing":
        return f"field {loc!r} is missing"
    return f"field {loc!r}: {e['msg']} (got {e.get('input')!r})"


def read_sft_jsonl(path: str | Path) -> list[SFTExample]:
    """Read and check our JSONL records; the first bad line raises DataError with its line number."""
    out = []
    for n, obj in iter_jsonl(path):
        try:
            ex = SFTExample.model_validate(obj)
        except ValidationError as e:
            raise DataError(path, _pydantic_problem(e), line=n,
                            fix="each line needs 'messages' (user ... assistant), 'label' (0 or 1) and 'source'") from None
        out.append(check_example(ex, path, n))
    return out


def write_sft_jsonl(path: str | Path, examples: Iterable[SFTExample]) -> None:
    atomic_write(path, "".join(ex.to_json() + "\n" for ex in examples))


@dataclass(slots=True)
class Candidate:
    """A reader's row before the mixture builder fills in a missing (malicious) response."""

    prompt: list[Message]                 # the conversation up to the response; the last one is the user's
    response: str | None                  # None: prompt-only malicious data; a refusal is generated
    source: str
    where: str                            # "file:line" or "file[index]" for error messages
    category: str | None = None           # a dataset's own harm category, when it has one
    harmful_response: str | None = None   # the Qi et al. augmentation's prefix source, when present
    extra: dict = field(default_factory=dict)

    @property
    def user_text(self) -> str:
        return "\n".join(m.content for m in self.prompt if m.role == "user")
