"""The SFT mixture: benign + malicious sources -> balanced, deduplicated, seeded train/held-out JSONL.

Steps, in order (each count lands in `SFTMixture.stats` and `manifest.json`):
1. read every source (readers.py); any malformed row raises DataError before anything is written;
2. drop examples longer than `max_chars` (prompt + response), rather than cut a response mid-way;
3. dedup by normalised user text (lower case, letters and digits only): the first copy within a
   label wins; a prompt found under both labels is dropped from both (its label is ambiguous);
4. sample `n_per_label` per label (default: the smaller pool), then split each label by
   `heldout_fraction`, so both splits are balanced and share no prompt;
5. give malicious prompts their response: the source's own reply if it is a refusal (and
   `reuse_refusals`), else a reasoned refusal (refusals.py);
6. optionally add Qi et al. recovery copies of train malicious examples (source "qi-augment");
7. shuffle and write `train.jsonl`, `heldout.jsonl`, `manifest.json` atomically.
Relative paths are taken from the current directory (run from the repo root for configs/*.yaml).
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from safecls.config import StrictModel
from safecls.data.augment import QiAugmentConfig, augment
from safecls.data.categories import category_from_alert
from safecls.data.readers import READERS, Format
from safecls.data.refusals import is_refusal, reasoned_refusal
from safecls.data.sft_records import Candidate, Message, SFTExample, write_sft_jsonl
from safecls.errors import ConfigError, DataError
from safecls.io import atomic_write_json

logger = logging.getLogger(__name__)


class SourceSpec(StrictModel):
    path: str = Field(description="Local file; relative paths are taken from the current directory.")
    format: Format = Field("alpaca", description="alpaca | safety-tuned-llamas | alert | jsonl (see readers.py).")
    name: str | None = Field(None, description="The records' `source` tag; default: the file name without suffix.")
    limit: int | None = Field(None, gt=0, description="Use at most this many rows (a seeded random subset).")
    skip_invalid: bool = Field(False, description="Skip rows with an empty instruction/response (logged) instead of failing.")

    @property
    def source_name(self) -> str:
        return self.name or Path(self.path).stem


class SFTMixtureConfig(StrictModel):
    benign: list[SourceSpec] = Field(min_length=1, description="Label-0 sources; each row needs a response.")
    malicious: list[SourceSpec] = Field(min_length=1, description="Label-1 sources; a missing or non-refusal response is replaced by a reasoned refusal.")
    n_per_label: int | None = Field(None, gt=0, description="Examples per label before the split; default: the smaller pool.")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each label kept out of training.")
    seed: int = Field(0, description="Drives sampling, splitting, refusal phrasing and augmentation.")
    max_chars: int | None = Field(4096, gt=0, description="Drop examples whose prompt + response is longer; null keeps all.")
    dedup: bool = Field(True, description="Deduplicate by normalised user text (see mixture.py).")
    reuse_refusals: bool = Field(True, description="Keep a malicious source's own response when it is a refusal.")
    augment: QiAugmentConfig | None = Field(None, description="Qi et al. 2024 safety-recovery examples; null: off.")
    output_dir: str | None = Field(None, description="Where train.jsonl, heldout.jsonl and manifest.json go; null: don't write.")


@dataclass(slots=True)
class SFTMixture:
    train: list[SFTExample]
    heldout: list[SFTExample]
    stats: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def normalise(text: str) -> str:
    """The dedup key: lower case, runs of non-alphanumerics -> one space."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def _read(spec: SourceSpec, label: int, rng: random.Random) -> list[Candidate]:
    kwargs: dict = {"source": spec.source_name, "skip_invalid": spec.skip_invalid}
    if spec.format == "alpaca":
        kwargs["require_output"] = label == 0  # prompt-only malicious Alpaca rows get a generated refusal
    if spec.format == "jsonl" and spec.name is None:
        kwargs["source"] = None                 # keep each record's own source
    rows = READERS[spec.format](spec.path, **kwargs)
    for c in rows:
        got = c.extra.get("label")
        if got is not None and got != label:
            side = "benign" if label == 0 else "malicious"
            raise DataError(c.where, f"a record labelled {got} is listed under {side}",
                            fix=f"move {spec.path} to the other list, or fix its labels")
        if label == 0 and c.response is None:
            raise DataError(c.where, "benign examples need a response", fix="use a file with responses")
    if spec.limit is not None and len(rows) > spec.limit:
        rows = rng.sample(rows, spec.limit)
    logger.info("%s: %d rows (%s, label %d)", spec.path, len(rows), spec.format, label)
    return rows


def _length(c: Candidate) -> int:
    return sum(len(m.content) for m in c.prompt) + len(c.response or "")


def _dedup(pool: list[Candidate], stats: Counter, label: int) -> dict[str, Candidate]:
    kept: dict[str, Candidate] = {}
    for c in pool:
        key = normalise(c.user_text)
        if key in kept:
            stats[f"duplicates_dropped_label{label}"] += 1
        else:
            kept[key] = c
    return kept


def _respond(c: Candidate, cfg: SFTMixtureConfig, stats: Counter) -> SFTExample:
    if c.response is not None and (c.extra.get("label") is not None or (cfg.reuse_refusals and is_refusal(c.response))):
        stats["refusals_reused"] += c.extra.get("label") is None
        reply = c.response
    else:
        stats["refusals_generated"] += 1
        reply = reasoned_refusal(c.user_text, seed=cfg.seed, category=category_from_alert(c.category, c.user_text))
    return SFTExample(messages=[*c.prompt, Message(role="assistant", content=reply)], label=1, source=c.source)


def _benign(c: Candidate) -> SFTExample:
    if c.response is None:  # _read rejects these; reaching here is a bug
        raise RuntimeError(f"benign candidate without a response at {c.where}")
    return SFTExample(messages=[*c.prompt, Message(role="assistant", content=c.response)], label=0, source=c.source)


def build_sft_mixture(config: SFTMixtureConfig) -> SFTMixture:
    """Build (and, with `output_dir`, write) the mixture; see the module docstring for the steps."""
    rng = random.Random(config.seed)
    stats: Counter = Counter()
    pools = {0: [c for s in config.benign for c in _read(s, 0, rng)],
             1: [c for s in config.malicious for c in _read(s, 1, rng)]}
    if config.max_chars is not None:
        for label, pool in pools.items():
            pools[label] = [c for c in pool if _length(c) <= config.max_chars]
            stats[f"too_long_dropped_label{label}"] = len(pool) - len(pools[label])
    if config.dedup:
        kept = {label: _dedup(pool, stats, label) for label, pool in pools.items()}
        both = kept[0].keys() & kept[1].keys()
        if both:
            logger.warning("%d prompts appear under both labels; dropped from both", len(both))
        stats["conflicting_prompts_dropped"] = len(both)
        pools = {label: [c for k, c in d.items() if k not in both] for label, d in kept.items()}

    available = min(len(pools[0]), len(pools[1]))
    n = config.n_per_label or available
    if n > available:
        raise ConfigError(f"n_per_label: {n} requested but only {len(pools[0])} benign and {len(pools[1])} malicious "
                          f"examples remain after filtering; lower n_per_label or add sources")
    if n == 0:
        raise ConfigError("no examples remain after filtering and dedup; check the sources and max_chars")
    n_held = round(n * config.heldout_fraction)

    train: list[SFTExample] = []
    heldout: list[SFTExample] = []
    aug_inputs: list[tuple[SFTExample, Candidate]] = []
    for label in (0, 1):
        chosen = rng.sample(pools[label], n)
        for i, c in enumerate(chosen):
            ex = _benign(c) if label == 0 else _respond(c, config, stats)
            (heldout if i < n_held else train).append(ex)
            if label == 1 and i >= n_held:
                aug_inputs.append((ex, c))

    if config.augment is not None:
        picked = rng.sample(aug_inputs, round(len(aug_inputs) * config.augment.fraction))
        for ex, c in picked:
            train.append(augment(ex, rng=rng, config=config.augment, seed=config.seed,
                                 harmful_response=c.harmful_response,
                                 category=category_from_alert(c.category, c.user_text).value))
        stats["qi_augmented"] = len(picked)
    rng.shuffle(train)
    rng.shuffle(heldout)

    stats.update({"n_per_label": n, "train": len(train), "heldout": len(heldout)})
    summary = {"counts": dict(stats),
               "train_by_source": dict(Counter(f"{e.source}/{e.label}" for e in train)),
               "heldout_by_source": dict(Counter(f"{e.source}/{e.label}" for e in heldout))}
    mixture = SFTMixture(train=train, heldout=heldout, stats=summary)
    if config.output_dir is not None:
        out = Path(config.output_dir)
        mixture.paths = {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl", "manifest": out / "manifest.json"}
        write_sft_jsonl(mixture.paths["train"], train)
        write_sft_jsonl(mixture.paths["heldout"], heldout)
        atomic_write_json(mixture.paths["manifest"], {"config": config.model_dump(mode="json"), **summary})
        logger.info("wrote %d train and %d held-out examples to %s", len(train), len(heldout), out)
    return mixture
