"""Pretrain-stage labelers: text -> benign (0) / malicious (1), picked by name from `LABELERS`.

- "keyword": harmful-topic keywords (categories.py); a cheap, noisy baseline.
- "guard": a guard LLM such as Llama Guard 3 (llama_guard.py).
- "safecls-head": any object with `.classify(prompts) -> list[float]` (e.g. a trained SafeClsModel),
  thresholded at `threshold`.

`label_texts` caches labels on disk, keyed by (labeler name + its config + sha256 of the text), so a
rerun labels nothing twice. A config cannot see inside a runtime object (a model passed in), so
labelers that take one have a `fingerprint` field: change it when the object changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from safecls.config import StrictModel, validate
from safecls.data.categories import matches_harm_keyword
from safecls.io import ResultLog, atomic_write
from safecls.registry import Registry

logger = logging.getLogger(__name__)


class Label(BaseModel):
    """One text's label; `key` is the sha256 of the text (the cache key within one labeler identity)."""

    key: str
    label: int = Field(ge=0, le=1)
    score: float | None = None   # P(malicious) where the labeler has one
    note: str = ""               # e.g. the keyword category, or the guard's "S1,S10"


class Labeler(ABC):
    name: ClassVar[str]                       # set by @LABELERS.register
    config_cls: ClassVar[type[StrictModel]]

    def __init__(self, config: StrictModel | dict | None = None):
        if config is None or isinstance(config, dict):
            config = validate(self.config_cls, config or {}, source=f"labeler {self.name!r} options")
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} takes a {self.config_cls.__name__}, got {type(config).__name__}")
        self.config = config

    @abstractmethod
    def label(self, texts: list[str]) -> list[Label]:
        """One Label per text, in order. Raises (JudgeError for a guard) rather than guess."""

    def identity(self) -> str:
        """What the cache is keyed by besides the text: the name and every config value."""
        return json.dumps({"labeler": self.name, "config": self.config.model_dump(mode="json")}, sort_keys=True)


LABELERS: Registry[Labeler] = Registry("labeler")


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class KeywordConfig(StrictModel):
    extra_keywords: list[str] = Field(default_factory=list, description="More lower-case phrases that mark a text malicious.")


@LABELERS.register("keyword")
class KeywordLabeler(Labeler):
    config_cls = KeywordConfig

    def label(self, texts: list[str]) -> list[Label]:
        out = []
        for t in texts:
            cat = matches_harm_keyword(t)
            hit = cat.value if cat else next((k for k in self.config.extra_keywords if k.lower() in t.lower()), None)
            out.append(Label(key=text_key(t), label=int(hit is not None), score=float(hit is not None), note=hit or ""))
        return out


class Classifier(Protocol):
    def classify(self, prompts: list[str]) -> list[float]: ...


class HeadConfig(StrictModel):
    threshold: float = Field(0.5, gt=0, lt=1, description="P(malicious) >= threshold -> label 1.")
    batch_size: int = Field(16, gt=0)
    fingerprint: str = Field("", description="Names the classifier (e.g. its checkpoint dir); part of the cache key.")


@LABELERS.register("safecls-head")
class HeadLabeler(Labeler):
    config_cls = HeadConfig

    def __init__(self, config: HeadConfig | dict | None = None, *, classifier: Classifier):
        super().__init__(config)
        if not callable(getattr(classifier, "classify", None)):
            raise TypeError(f"classifier must have .classify(prompts) -> list[float]; got {type(classifier).__name__}")
        self.classifier = classifier

    def label(self, texts: list[str]) -> list[Label]:
        out = []
        for i in range(0, len(texts), self.config.batch_size):
            batch = texts[i : i + self.config.batch_size]
            probs = [float(p) for p in self.classifier.classify(batch)]
            if len(probs) != len(batch):
                raise RuntimeError(f"classify returned {len(probs)} scores for {len(batch)} prompts")
            out += [Label(key=text_key(t), label=int(p >= self.config.threshold), score=p) for t, p in zip(batch, probs)]
        return out


def make_labeler(name: str, options: dict[str, Any] | None = None, **runtime: Any) -> Labeler:
    """LABELERS.get(name) built from plain options (validated strictly) and runtime objects."""
    return LABELERS.get(name)(options or {}, **runtime)


def label_texts(labeler: Labeler, texts: Sequence[str], *, cache_dir: str | Path | None = None,
                batch_size: int = 64) -> list[Label]:
    """Labels in order, reading and extending the on-disk cache; only uncached texts reach the labeler."""
    cache: dict[str, Label] = {}
    log: ResultLog[Label] | None = None
    if cache_dir is not None:
        ident = labeler.identity()
        path = Path(cache_dir) / f"{labeler.name}-{text_key(ident)[:16]}.jsonl"
        log = ResultLog(path, Label)
        if not path.with_suffix(".identity.json").exists():  # says which labeler/config the cache file belongs to
            atomic_write(path.with_suffix(".identity.json"), ident + "\n")
        cache = {r.key: r for r in log}
    todo = list(dict.fromkeys(t for t in texts if text_key(t) not in cache))
    logger.info("%s: %d texts, %d cached, %d to label", labeler.name, len(texts), len(texts) - len(todo), len(todo))
    for i in tqdm(range(0, len(todo), batch_size), desc=f"label ({labeler.name})", unit="batch", disable=None):
        batch = todo[i : i + batch_size]
        labels = labeler.label(batch)
        if len(labels) != len(batch):
            raise RuntimeError(f"labeler {labeler.name!r} returned {len(labels)} labels for {len(batch)} texts")
        for lab in labels:
            cache[lab.key] = lab
            if log is not None:
                log.append(lab)
    return [cache[text_key(t)] for t in texts]

