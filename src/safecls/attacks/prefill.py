"""The prefill attack: the reply starts with the first k tokens of a harmful reply, and the model continues it.

Only the continuation is judged (the record's `response`; the prefill is kept in `prefill`). The harmful reply
comes from the item (`harmful_prefix`), a HEx-PHI-style file, or a complying model (cached); with
`source: target` the AdvBench target ("Sure, here is ...") is the whole prefill.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from safecls.attacks.base import ATTACKS, Attack, AttackItem, AttackRecord, make_record, record_key, user_turn
from safecls.attacks.harmful_prefix import first_tokens, generate_harmful_responses, read_harmful_prefixes
from safecls.config import StrictModel
from safecls.errors import DataError
from safecls.inference.config import DecodeConfig

logger = logging.getLogger(__name__)


class PrefillConfig(StrictModel):
    num_tokens: list[int] = Field(default_factory=lambda: [5, 10, 20, 40], min_length=1,
                                  description="Prefill lengths k, in tokens of the harmful reply.")
    source: Literal["auto", "item", "file", "generate", "target"] = Field(
        "auto", description="auto: the item's harmful_prefix, else responses_file, else generated. "
        "target: the item's target string is the whole prefill.")
    responses_file: Path | None = Field(None, description="HEx-PHI harmful-prefix JSONL/CSV (request + harmful reply).")
    generator: str = Field("base", description="Complying model that writes the harmful replies (a --model reference: "
                                               "base = the embedded SmolLM2, which refuses almost nothing).")
    generator_max_new_tokens: int = Field(64, gt=0)
    cache_dir: Path | None = Field(None, description="Where generated replies are cached (default: safecls cache dir).")
    tokenizer: str | None = Field(None, description="Tokenizer that counts k for an endpoint target (default: the generator's).")
    decode: DecodeConfig = Field(default_factory=lambda: DecodeConfig(max_new_tokens=128))
    system_prompt: str | None = None


@ATTACKS.register("prefill")
class PrefillAttack(Attack):
    """The reply starts with the first k tokens of a harmful reply (or the AdvBench target); the continuation is judged.

    One record per item and k (or one per item with `source: target`).

    Args:
        generator: a complying Target for `source: generate|auto` (default: loaded from `config.generator`).
    """

    config_cls = PrefillConfig
    needs_prefill = True

    def __init__(self, generator: Any | None = None):
        self._generator = generator

    def _generator_target(self, cfg: PrefillConfig) -> Any:
        if self._generator is None:
            from safecls.attacks.target import LocalTarget

            self._generator = LocalTarget.load(cfg.generator)
        return self._generator

    def _tokenizer(self, target: Any, cfg: PrefillConfig) -> Any:
        if getattr(target, "tokenizer", None) is not None:
            return target.tokenizer
        if cfg.tokenizer is not None:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(cfg.tokenizer)
        return self._generator_target(cfg).tokenizer

    def _replies(self, items: list[AttackItem], cfg: PrefillConfig) -> dict[str, str]:
        """{item id: harmful reply} for every item, from the configured source."""
        out: dict[str, str] = {}
        from_file = read_harmful_prefixes(cfg.responses_file) if cfg.responses_file and cfg.source in ("auto", "file") else {}
        need_gen = []
        for it in items:
            if cfg.source in ("auto", "item") and it.harmful_prefix:
                out[it.id] = it.harmful_prefix
            elif it.prompt.strip() in from_file:
                out[it.id] = from_file[it.prompt.strip()]
            elif cfg.source in ("auto", "generate"):
                need_gen.append(it)
            else:
                where = cfg.responses_file if cfg.source == "file" else "<items>"
                raise DataError(where or "<prefill responses_file>", f"no harmful reply for item {it.id} ({it.prompt[:60]!r})",
                                fix="add it to the file, or use source: auto/generate")
        if need_gen:
            gen = self._generator_target(cfg)
            cache = cfg.cache_dir
            if cache is None:
                from safecls.model.default import cache_dir

                cache = cache_dir() / "attacks"
            got = generate_harmful_responses([it.prompt for it in need_gen], gen, Path(cache) / "harmful_replies.jsonl",
                                             max_new_tokens=cfg.generator_max_new_tokens, tag=cfg.generator)
            out.update({it.id: got[it.prompt] for it in need_gen})
        return out

    def check_items(self, items: list[AttackItem], config: PrefillConfig) -> list[str]:
        problems = []
        if config.source == "target":
            missing = [it.id for it in items if not it.target]
            if missing:
                problems.append(f"source: target needs each item's target string; {len(missing)} of {len(items)} items "
                                f"have none (e.g. {missing[0]}). Fix: run it on a set with targets (AdvBench), or use "
                                "source: auto")
        if config.source == "item":
            missing = [it.id for it in items if not it.harmful_prefix]
            if missing:
                problems.append(f"source: item needs each item's harmful_prefix; {len(missing)} of {len(items)} items "
                                f"have none (e.g. {missing[0]}). Fix: source: auto (generates the missing ones)")
        if config.source == "file" and config.responses_file is None:
            problems.append("source: file needs responses_file. Fix: set responses_file, or source: auto")
        elif config.responses_file is not None and not Path(config.responses_file).expanduser().is_file():
            problems.append(f"responses_file {config.responses_file} does not exist. Fix: point it at a HEx-PHI-style "
                            "harmful-prefix file, or drop it (source: auto generates replies)")
        return problems

    def attack(self, target: Any, items: list[AttackItem], config: PrefillConfig, done: set[str]) -> Iterator[AttackRecord]:
        if config.source == "target":
            todo = [it for it in items if record_key(self.name, it.id, "target") not in done]
            missing = [it.id for it in todo if not it.target]
            if missing:
                raise DataError("<items>", f"source: target needs a target string; items {missing[:5]} have none",
                                fix="use a dataset with targets (AdvBench) or another source")
            msgs = [user_turn(it.prompt, config.system_prompt) for it in todo]
            gens = target.generate(msgs, config.decode, prefills=[it.target for it in todo]) if todo else []
            for it, m, g in zip(todo, msgs, gens):
                yield make_record(self.name, it, "target", m, g, seed=config.decode.seed,
                                  parameters={"source": "target", "decode": config.decode.model_dump()})
            return
        todo = [it for it in items if any(record_key(self.name, it.id, f"k={k}") not in done for k in config.num_tokens)]
        if not todo:
            return
        replies = self._replies(todo, config)
        tok = self._tokenizer(target, config)
        for it in todo:
            ks = [k for k in config.num_tokens if record_key(self.name, it.id, f"k={k}") not in done]
            cuts = [first_tokens(tok, replies[it.id], k) for k in ks]
            msg = user_turn(it.prompt, config.system_prompt)
            gens = target.generate([msg] * len(ks), config.decode, prefills=[c[0] for c in cuts])
            for k, (_, n), g in zip(ks, cuts, gens):
                yield make_record(self.name, it, f"k={k}", msg, g, seed=config.decode.seed,
                                  parameters={"k": k, "source": config.source, "decode": config.decode.model_dump()},
                                  extra={"prefill_tokens": n, "harmful_reply": replies[it.id]})
