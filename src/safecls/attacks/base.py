"""The one attack interface: `Attack.run(target, items, config, log) -> records`, and the ATTACKS registry.

An attack turns each item (a harmful request) into one or more *variants* (a prefill length, a decoding setting,
a persuasion technique, ...), sends each to a Target and returns one AttackRecord per variant. Judging happens in
eval: a record holds what reproduces it (prompt id, adversarial input, response, safety trace, parameters, seed).
A record's `key` is `<attack>/<prompt id>/<variant>`, so a run resumes by skipping the keys its log already has.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from safecls.config import StrictModel, validate
from safecls.errors import ConfigError, DataError
from safecls.registry import Registry

if TYPE_CHECKING:
    from safecls.attacks.target import Target
    from safecls.io import ResultLog

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]


class AttackItem(BaseModel):
    """One harmful request to attack. `target` is the affirmative opening GCG/AutoDAN optimise for
    (AdvBench's "Sure, here is ..."); `harmful_prefix` a harmful reply the prefill attack starts from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="stable id, e.g. 'advbench/0017'")
    prompt: str = Field(min_length=1)
    target: str | None = None
    harmful_prefix: str | None = None
    category: str | None = None


class AttackRecord(BaseModel):
    """One attacked generation. `response` is what the judge reads: the continuation only (never the prefill)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    attack: str
    prompt_id: str
    prompt: str
    variant: str = Field("", description="which variant of the attack, e.g. 'k=10' or 'temperature=0.7/no-sys'")
    adversarial_input: str | Messages = Field(description="what the target was sent (text or chat messages)")
    prefill: str = ""
    response: str | None = Field(None, description="None when the attack failed before querying the target (see error)")
    finish_reason: str | None = None
    trace: dict[str, Any] | None = Field(None, description="the engine's safety trace; None for endpoints / plain models")
    parameters: dict[str, Any] = Field(default_factory=dict, description="decode settings and attack knobs of this variant")
    seed: int | None = None
    error: str | None = Field(None, description="why there is no response (e.g. the paraphraser refused); never a verdict")
    extra: dict[str, Any] = Field(default_factory=dict, description="attack outputs: suffix, loss curve, judge score, ...")


def record_key(attack: str, item_id: str, variant: str = "") -> str:
    return f"{attack}/{item_id}/{variant}" if variant else f"{attack}/{item_id}"


class Attack(ABC):
    """Base class. Subclasses set `config_cls`, `black_box` and implement `attack()`.

    `black_box`: works through text generation alone, so any Target (an OpenAI-compatible endpoint included);
    otherwise the attack needs gradients or logits and a LocalTarget.
    """

    name: ClassVar[str]  # set by @ATTACKS.register
    config_cls: ClassVar[type[StrictModel]]
    black_box: ClassVar[bool] = True
    needs_prefill: ClassVar[bool] = False
    # the constructor argument a helper model goes to (PAP's paraphraser, AutoDAN's mutator); None: takes none
    helper_arg: ClassVar[str | None] = None

    def make_config(self, config: StrictModel | dict[str, Any] | None) -> Any:
        if config is None:
            return self.config_cls()
        if isinstance(config, dict):
            return validate(self.config_cls, _with_nested_defaults(self.config_cls, config),
                            source=f"{self.name} attack config")
        if not isinstance(config, self.config_cls):
            raise ConfigError(f"{self.name} attack: config must be a {self.config_cls.__name__} or a dict "
                              f"(got {type(config).__name__})")
        return config

    def check_target(self, target: Target) -> None:
        if not self.black_box and not target.white_box:
            raise ConfigError(f"the {self.name} attack needs gradients or logits: {target.describe()} is a black box. "
                              "Fix: attack a local model (--model DIR|default|plain:PATH)")
        if self.needs_prefill and not target.supports_prefill:
            raise ConfigError(f"the {self.name} attack needs response prefilling, which {target.describe()} does not "
                              "support. Fix: use a local model, or an endpoint built with prefill='continue_final_message'")

    def check_items(self, items: Sequence[AttackItem], config: Any) -> list[str]:
        """What this attack cannot do with these items under `config`, one problem (with its fix) per entry; checked
        before any model loads. The default: nothing."""
        return []

    def run(self, target: Target, items: Sequence[AttackItem], config: StrictModel | dict[str, Any] | None = None,
            log: ResultLog | None = None) -> list[AttackRecord]:
        """Attack every item and return the new records (keys already in `log` are skipped, so a killed run
        resumes where it stopped). Each record is appended to `log` as soon as it exists.

        Raises:
            DataError: `items` is empty.
            ConfigError: the config is invalid, or the target cannot run this attack.
        """
        cfg = self.make_config(config)
        items = list(items)
        if not items:
            raise DataError(f"<{self.name} attack>", "no items to attack (the dataset is empty)",
                            fix="pass a non-empty dataset, or raise --limit")
        self.check_target(target)
        done = log.done_keys() if log is not None else set()
        if done:
            logger.info("%s: resuming, %d records already done", self.name, len(done))
        out = []
        for rec in self.attack(target, items, cfg, done):
            if log is not None:
                log.append(rec)
            out.append(rec)
        return out

    @abstractmethod
    def attack(self, target: Target, items: list[AttackItem], config: Any, done: set[str]) -> Iterator[AttackRecord]:
        """Yield one record per (item, variant) whose key is not in `done`."""


ATTACKS: Registry[Attack] = Registry("attack")


def _with_nested_defaults(cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`{"decode": {"max_new_tokens": 20}}` keeps the attack's other decode defaults (e.g. the attacker's policy):
    a partial dict for a nested-config field is laid over that field's default, not over the class defaults."""
    out = dict(data)
    for name, field in cls.model_fields.items():
        given = out.get(name)
        if not isinstance(given, dict) or field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            out[name] = {**_with_nested_defaults(type(default), default.model_dump()), **_with_nested_defaults(type(default), given)}
    return out


def make_record(attack: str, item: AttackItem, variant: str, adversarial_input: str | Messages, gen: Any | None, *,
                parameters: dict[str, Any] | None = None, seed: int | None = None, error: str | None = None,
                extra: dict[str, Any] | None = None) -> AttackRecord:
    """A record from a target's Generation (None when the attack failed before querying the target)."""
    return AttackRecord(
        key=record_key(attack, item.id, variant), attack=attack, prompt_id=item.id, prompt=item.prompt, variant=variant,
        adversarial_input=adversarial_input, prefill=getattr(gen, "prefill", "") or "",
        response=None if gen is None else gen.text, finish_reason=None if gen is None else gen.finish_reason,
        trace=None if gen is None else gen.trace, parameters=parameters or {}, seed=seed, error=error,
        extra=extra or {},
    )


def user_turn(text: str, system_prompt: str | None = None) -> Messages:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": text}]
