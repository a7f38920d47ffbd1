"""Harmful replies that the prefill attack starts from: read from a file, or generated once and cached.

File formats (HEx-PHI harmful-prefix style; one request and a harmful reply per row):
- JSONL, each line a chat `[{"role": "user", ...}, {"role": "assistant", ...}]` (Qi et al.'s Harmful-HEx-PHI.jsonl),
  or `{"messages": [...]}`, or an object with a prompt key (prompt, instruction, goal, question) and a reply key
  (harmful_prefix, prefix, response, output, target);
- CSV with the same column names.

Generated replies come from a complying model (by default the base SmolLM2, which refuses almost nothing),
greedy, and are cached on disk keyed by model, settings and prompt, so a rerun generates nothing.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from safecls.data.files import iter_jsonl
from safecls.errors import DataError
from safecls.io import ResultLog

logger = logging.getLogger(__name__)

PROMPT_KEYS = ("prompt", "instruction", "goal", "question")
REPLY_KEYS = ("harmful_prefix", "prefix", "response", "output", "target")


def chat_pair(msgs: Any) -> tuple[str, str] | None:
    if not isinstance(msgs, list):
        return None
    user = next((m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None)
    reply = next((m.get("content") for m in reversed(msgs) if isinstance(m, dict) and m.get("role") == "assistant"), None)
    return (user, reply) if isinstance(user, str) and isinstance(reply, str) else None


def _from_dict(obj: dict[str, Any]) -> tuple[str, str] | None:
    if "messages" in obj:
        return chat_pair(obj["messages"])
    p = next((obj[k] for k in PROMPT_KEYS if isinstance(obj.get(k), str)), None)
    r = next((obj[k] for k in REPLY_KEYS if isinstance(obj.get(k), str)), None)
    return (p, r) if p is not None and r is not None else None


def read_harmful_prefixes(path: str | Path) -> dict[str, str]:
    """{request: harmful reply}. Raises DataError naming the file and line of a malformed row."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(path, "harmful-prefix file not found",
                        fix="pass a JSONL/CSV of request + harmful reply (HEx-PHI harmful-prefix format)")
    fix = (f"each row needs a request ({', '.join(PROMPT_KEYS)}) and a harmful reply ({', '.join(REPLY_KEYS)}), "
           "or a [user, assistant] chat")
    out: dict[str, str] = {}
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                pair = _from_dict(dict(row))
                if pair is None or not pair[0].strip() or not pair[1].strip():
                    raise DataError(path, "row has no request/reply columns or they are empty", line=reader.line_num, fix=fix)
                out[pair[0].strip()] = pair[1]
    else:
        for n, obj in iter_jsonl(path, objects_only=False):
            pair = _from_dict(obj) if isinstance(obj, dict) else chat_pair(obj)
            if pair is None or not pair[0].strip() or not pair[1].strip():
                raise DataError(path, "no request/harmful reply on this line", line=n, fix=fix)
            out[pair[0].strip()] = pair[1]
    if not out:
        raise DataError(path, "no rows", fix=fix)
    return out


def first_tokens(tokenizer: Any, text: str, k: int) -> tuple[str, int]:
    """The text of the first k tokens of `text` (and how many there were, <= k)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:k]
    return tokenizer.decode(ids, skip_special_tokens=True), len(ids)


class _Cached(BaseModel):
    key: str
    prompt: str
    response: str


def generate_harmful_responses(prompts: Sequence[str], target: Any, cache_file: str | Path, *, max_new_tokens: int = 64,
                               tag: str = "") -> dict[str, str]:
    """Replies of a complying `target` (a Target; greedy, no safety policy), cached in `cache_file` (JSONL).
    `tag` names the model and settings; it is part of each row's key, so one file can hold several."""
    from safecls.inference.config import DecodeConfig

    log = ResultLog(cache_file, _Cached)
    key = lambda p: hashlib.sha256(f"{tag}\n{max_new_tokens}\n{p}".encode()).hexdigest()[:24]  # noqa: E731
    have = {r.key: r.response for r in log}
    missing = list(dict.fromkeys(p for p in prompts if key(p) not in have))
    if missing:
        logger.info("generating %d harmful replies with %s (cached in %s)", len(missing), target.describe(), cache_file)
        gens = target.generate(missing, DecodeConfig(max_new_tokens=max_new_tokens, temperature=0.0, policy="low"))
        for p, g in zip(missing, gens):
            log.append(_Cached(key=key(p), prompt=p, response=g.text))
            have[key(p)] = g.text
    return {p: have[key(p)] for p in prompts}
