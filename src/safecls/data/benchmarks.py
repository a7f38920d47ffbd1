"""Evaluation benchmarks: one loader per public format, one common record, one registry.

    items = load_benchmark("advbench", "/path/to/shared/data", limit=50, seed=0)
    items[0].id, items[0].prompt, items[0].target      # "advbench/0000", "Write a script ...", "Sure, here is ..."

`path` may be the benchmark's file, a folder holding it (or holding a sub-folder named like the benchmark, so the
shared data root works), or None: then the file is downloaded from its canonical location into the cache
(see `safecls.data.download`) and verified against its sha256 where one is known. HEx-PHI is gated and is never
downloaded. Ids are stable across runs and subsets ("advbench/0017" is the 18th data row of the file, whatever
`limit` is), so run logs can resume by id.
"""

from __future__ import annotations

import inspect
import logging
import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from safecls.data.download import default_cache_dir, fetch_cached
from safecls.data.files import csv_rows, iter_jsonl, require_columns, require_field
from safecls.errors import ConfigError, DataError
from safecls.registry import Registry

logger = logging.getLogger(__name__)


class BenchmarkItem(BaseModel):
    """One prompt of a benchmark. `label` is "unsafe" for harmful-behaviour sets, "safe"/"unsafe" for XSTest and
    None for utility sets (GSM8K, MT-Bench)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="'<benchmark>/<stable key>', e.g. 'advbench/0017'; unchanged by limit/seed")
    benchmark: str
    prompt: str
    category: str | None = None
    label: Literal["safe", "unsafe"] | None = None
    target: str | None = Field(None, description="attack target string ('Sure, here is ...'), where the set has one")
    reference: str | None = Field(None, description="reference answer (GSM8K: the final number; MT-Bench: turn 1)")
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    url: str
    filename: str
    sha256: str | None  # None: upstream is a moving target; the digest is logged on download


class Benchmark(ABC):
    """A loader. Subclasses set `files` (canonical copies) and implement `parse(path)`; options go to __init__."""

    name: ClassVar[str]  # set by @BENCHMARKS.register
    files: ClassVar[tuple[RemoteFile, ...]] = ()
    where: ClassVar[str] = ""  # human pointer used in "file not found" messages
    gated: ClassVar[bool] = False

    @abstractmethod
    def parse(self, path: Path) -> list[BenchmarkItem]:
        """Parse the local file (or folder) at `path`; malformed rows raise DataError with file and line."""

    def locate(self, path: Path) -> Path:
        """Resolve a user path (file, folder, or data root) to what `parse` reads."""
        if path.is_file():
            return path
        for folder in (path, path / self.name):
            for f in self.files:
                if (folder / f.filename).is_file():
                    return folder / f.filename
        raise DataError(path, f"no {self.name} file here (looked for {self._names()})", fix=self._fix())

    def load(self, path: str | Path | None = None, *, cache_dir: str | Path | None = None) -> list[BenchmarkItem]:
        if path is not None:
            path = Path(path).expanduser()
            if not path.exists():
                raise DataError(path, f"{self.name} data not found", fix=self._fix())
            return self.parse(self.locate(path))
        if self.gated:
            raise DataError(f"<{self.name}: no local path given>", f"{self.name} is gated and is not downloaded",
                            fix=self._fix())
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        f = self.files[0]
        return self.parse(fetch_cached(f.url, cache / self.name / f.filename, f.sha256))

    def _names(self) -> str:
        return " or ".join(f.filename for f in self.files)

    def _fix(self) -> str:
        urls = " or ".join(f.url for f in self.files[:1])
        return f"pass the path of {self._names()}; get it from {self.where or urls}" + (
            "" if self.gated else " (or pass no path to download and cache it)"
        )


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def load_benchmark(
    name: str,
    path: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    categories: list[str] | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> list[BenchmarkItem]:
    """Load benchmark `name` (see BENCHMARKS.names()), keep `categories` if given, then a seeded random subset of
    `limit` items in file order. `options` go to the loader's constructor (e.g. `fix_targets=False` for AdvBench)."""
    cls = BENCHMARKS.get(name)
    params = inspect.signature(cls).parameters.values()
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"benchmark {name!r}: unknown option(s) {unknown}; valid: {', '.join(valid) or 'none'}")
    items = cls(**options).load(path, cache_dir=cache_dir)
    if categories is not None:
        items = select_categories(items, categories)
    return subset(items, limit=limit, seed=seed)


def select_categories(items: list[BenchmarkItem], categories: list[str]) -> list[BenchmarkItem]:
    known = {i.category for i in items}
    unknown = [c for c in categories if c not in known]
    if unknown:
        valid = ", ".join(sorted(str(c) for c in known))
        raise ConfigError(f"categories: {unknown} not in {items[0].benchmark if items else 'this benchmark'}; "
                          f"valid: {valid}")
    wanted = set(categories)
    return [i for i in items if i.category in wanted]


def subset(items: list[BenchmarkItem], *, limit: int | None, seed: int = 0) -> list[BenchmarkItem]:
    """A seeded random sample of `limit` items, returned in their original order (stable for a given seed)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 0:
        raise ConfigError(f"limit: must be >= 0 (got {limit})")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


# ---------------------------------------------------------------- harmful-behaviour sets

_LLM_ATTACKS = "https://raw.githubusercontent.com/llm-attacks/llm-attacks/a62d1307e38b3a076e614b20781c785fd860d813"


@BENCHMARKS.register("advbench")
class AdvBench(Benchmark):
    files = (RemoteFile(f"{_LLM_ATTACKS}/data/advbench/harmful_behaviors.csv", "harmful_behaviors.csv",
                        "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1"),)

    def __init__(self, fix_targets: bool = True):
        self.fix_targets = fix_targets

    def parse(self, path: Path) -> list[BenchmarkItem]:
        items = []
        for n, (line, row) in enumerate(csv_rows(path)):
            require_columns(path, row, line, ("goal", "target"))
            items.append(BenchmarkItem(id=f"advbench/{n:04d}", benchmark="advbench", prompt=row["goal"],
                                       label="unsafe", target=row["target"]))
        return _unrotate_advbench_targets(items) if self.fix_targets else items


# The released harmful_behaviors.csv pairs some goals with another row's target: data rows 62, 64, 65 (1-based;
# file lines 63, 65, 66) are rotated, as its SOURCE.md says, and so are rows 282-284 and 459-460 (found by the
# test that checks every pair). A wrong target silently weakens GCG and prefill attacks on those rows, so we give
# each goal back its own target when the mismatched rows' targets form a permutation among themselves (so no text
# is invented, and a corrected fork is left alone). The file's own target is kept in extra["file_target"].
_STOP = frozenset("sure here is are the and for that how with into from can about".split())


def _stems(text: str) -> set[str]:
    # Four-letter prefixes match "pick"/"picking" and "commit"/"committing" without a stemmer dependency.
    return {w[:4] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3 and w not in _STOP}


def _match(goal: str, target: str) -> float:
    t = _stems(target)
    return len(_stems(goal) & t) / max(1, len(t))


def _unrotate_advbench_targets(items: list[BenchmarkItem]) -> list[BenchmarkItem]:
    suspects = [i for i, it in enumerate(items) if _match(it.prompt, it.target or "") < 0.5]
    owner: dict[int, int] = {}  # row -> row whose file target belongs to it
    for i in suspects:
        best = max(suspects, key=lambda j: _match(items[i].prompt, items[j].target or ""))
        if best != i and _match(items[i].prompt, items[best].target or "") >= 0.5:
            owner[i] = best
    if sorted(owner.values()) != sorted(owner):
        logger.warning("advbench: mismatched goal/target rows %s do not form a rotation; left as in the file",
                       [i + 1 for i in suspects])
        return items
    out = list(items)
    for row, src in owner.items():
        out[row] = items[row].model_copy(update={
            "target": items[src].target,
            "extra": {**items[row].extra, "file_target": items[row].target, "target_fixed": True},
        })
    if owner:
        logger.debug("advbench: restored the rotated targets of data rows %s", sorted(r + 1 for r in owner))
    return out


@BENCHMARKS.register("maliciousinstruct")
class MaliciousInstruct(Benchmark):
    files = (RemoteFile("https://raw.githubusercontent.com/Princeton-SysML/Jailbreak_LLM/"
                        "1e490531c0ef4bc13430178bf1fbc8f813e34b1a/data/MaliciousInstruct.txt", "MaliciousInstruct.txt",
                        "a64d69dd1004aac4a23aaff3748fb8f17161893f74db36f45b8bc849eb1bcce5"),)

    def parse(self, path: Path) -> list[BenchmarkItem]:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # no trailing newline upstream: splitlines copes
        return [BenchmarkItem(id=f"maliciousinstruct/{n:04d}", benchmark="maliciousinstruct", prompt=text.strip(),
                              label="unsafe")
                for n, text in enumerate(lines) if text.strip()]


# HEx-PHI category files, numbered as in the dataset card (the public release may leave category 2 out).
HEX_PHI_CATEGORIES = {
    1: "Illegal Activity", 2: "Child Abuse Content", 3: "Hate/Harass/Violence", 4: "Malware", 5: "Physical Harm",
    6: "Economic Harm", 7: "Fraud/Deception", 8: "Adult Content", 9: "Political Campaigning",
    10: "Privacy Violation Activity", 11: "Tailored Financial Advice",
}


@BENCHMARKS.register("hex-phi")
class HexPhi(Benchmark):
    gated = True
    where = ("the gated Hugging Face dataset https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI (accept its "
             "license agreement there, download category_1.csv .. category_11.csv into one folder); do not use a "
             "re-hosted copy")
    files = tuple(RemoteFile(f"https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI/resolve/main/category_{i}.csv",
                             f"category_{i}.csv", None) for i in HEX_PHI_CATEGORIES)

    def _names(self) -> str:
        return "a folder of category_<N>.csv files"

    def locate(self, path: Path) -> Path:
        if path.is_file():
            return path
        for folder in (path, path / self.name, path / "HEx-PHI"):
            if any(folder.glob("category_*.csv")):
                return folder
        raise DataError(path, "no HEx-PHI category_N.csv files here", fix=self._fix())

    def parse(self, path: Path) -> list[BenchmarkItem]:
        files = [path] if path.is_file() else sorted(path.glob("category_*.csv"), key=_category_number)
        items = []
        for f in files:
            cat = _category_number(f)
            if cat not in HEX_PHI_CATEGORIES:
                raise DataError(f, "file name must be category_<1..11>.csv")
            for n, (line, row) in enumerate(csv_rows(f, header=False)):
                fields = [x for x in row if x.strip()]
                if len(fields) != 1:
                    raise DataError(f, f"expected one prompt per row, got {len(fields)} fields", line=line,
                                    fix="quote prompts that contain commas")
                items.append(BenchmarkItem(id=f"hex-phi/{cat:02d}/{n:03d}", benchmark="hex-phi",
                                           prompt=fields[0].strip(), category=HEX_PHI_CATEGORIES[cat], label="unsafe"))
        return items


def _category_number(path: Path) -> int:
    tail = path.stem.removeprefix("category_")
    return int(tail) if tail.isdigit() else -1


_HARMBENCH = "https://raw.githubusercontent.com/centerforaisafety/HarmBench/main/data/behavior_datasets"


@BENCHMARKS.register("harmbench")
class HarmBench(Benchmark):
    files = tuple(RemoteFile(f"{_HARMBENCH}/harmbench_behaviors_text_{s}.csv", f"harmbench_behaviors_text_{s}.csv",
                             None) for s in ("all", "test", "val"))

    def __init__(self, include_copyright: bool = False):
        # Copyright behaviours are scored by hashing against the source text, not by a refusal judge, so they are
        # left out of ASR by default (as HarmBench's own classifier pipeline does).
        self.include_copyright = include_copyright

    def parse(self, path: Path) -> list[BenchmarkItem]:
        items = []
        for line, row in csv_rows(path):
            require_columns(path, row, line, ("Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID"))
            if row["FunctionalCategory"] == "copyright" and not self.include_copyright:
                continue
            context = (row.get("ContextString") or "").strip()
            # HarmBench's DirectRequest puts a contextual behaviour after its context, split by a rule.
            prompt = f"{context}\n\n---\n\n{row['Behavior']}" if context else row["Behavior"]
            items.append(BenchmarkItem(
                id=f"harmbench/{row['BehaviorID']}", benchmark="harmbench", prompt=prompt,
                category=row["SemanticCategory"], label="unsafe",
                extra={"behavior": row["Behavior"], "functional_category": row["FunctionalCategory"],
                       "tags": row.get("Tags") or "", "context": context}))
        return items


@BENCHMARKS.register("jbb")
class JailbreakBench(Benchmark):
    files = (RemoteFile("https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors/resolve/main/data/"
                        "harmful-behaviors.csv", "harmful-behaviors.csv", None),
             RemoteFile("https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors/resolve/main/data/"
                        "benign-behaviors.csv", "benign-behaviors.csv", None))

    def parse(self, path: Path) -> list[BenchmarkItem]:
        label = "safe" if "benign" in path.name else "unsafe"
        items = []
        for n, (line, row) in enumerate(csv_rows(path)):
            require_columns(path, row, line, ("Goal", "Target", "Category"))
            key = row.get("Index") or str(n + 1)
            items.append(BenchmarkItem(
                id=f"jbb/{label}/{int(key):03d}" if key.isdigit() else f"jbb/{label}/{key}", benchmark="jbb",
                prompt=row["Goal"], category=row["Category"], label=label, target=row["Target"],
                extra={"behavior": row.get("Behavior", ""), "source": row.get("Source", "")}))
        return items


# ---------------------------------------------------------------- over-refusal and utility sets


@BENCHMARKS.register("xstest")
class XSTest(Benchmark):
    files = (RemoteFile("https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/"
                        "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d/xstest_prompts.csv", "xstest_prompts.csv",
                        "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a"),
             RemoteFile("", "xstest_v2_prompts.csv", None))  # the pre-2025 name: only looked for locally

    def parse(self, path: Path) -> list[BenchmarkItem]:
        items = []
        for n, (line, row) in enumerate(csv_rows(path)):
            require_columns(path, row, line, ("prompt", "type"))
            # xstest_v2_prompts.csv had no label column: its unsafe prompts are the "contrast_" types.
            label = (row.get("label") or ("unsafe" if row["type"].startswith("contrast_") else "safe")).strip()
            if label not in ("safe", "unsafe"):
                raise DataError(path, f"label must be 'safe' or 'unsafe' (got {label!r})", line=line)
            key = (row.get("id") or row.get("id_v2") or str(n + 1)).strip()
            items.append(BenchmarkItem(
                id=f"xstest/{int(key):04d}" if key.isdigit() else f"xstest/{key}", benchmark="xstest",
                prompt=row["prompt"], category=row["type"], label=label,
                extra={"focus": row.get("focus") or "", "note": row.get("note") or ""}))
        return items


def gsm8k_reference(answer: str) -> str | None:
    """The final answer after '####' in a GSM8K solution, without thousands separators."""
    if "####" not in answer:
        return None
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


@BENCHMARKS.register("prompts")
class Prompts(Benchmark):
    """Any JSONL of prompts: {"id", "prompt", optional "label" (safe/unsafe, or 0/1), "category", "reference",
    "target" (an affirmative opening for prefill / GCG), "split"}. `split` keeps only rows of that split (e.g. the recipe's held-out "test" rows); ids are
    `prompts/<id>` (the eval config's benchmark label names the set in tables)."""

    where = "a JSONL file you write (see the class docstring)"

    def __init__(self, split: str | None = None):
        self.split = split

    def locate(self, path: Path) -> Path:
        if path.is_file():
            return path
        raise DataError(path, "not a file", fix="pass the path of a JSONL file of prompts")

    def parse(self, path: Path) -> list[BenchmarkItem]:
        out = []
        for n, row in iter_jsonl(path):
            if self.split is not None and row.get("split") != self.split:
                continue
            prompt = require_field(path, row, "prompt", n)
            label = row.get("label")
            label = {0: "safe", 1: "unsafe"}.get(label, label) if not isinstance(label, bool) else None
            if label not in (None, "safe", "unsafe"):
                raise DataError(path, f"label must be safe/unsafe or 0/1 (got {row.get('label')!r})", line=n)
            out.append(BenchmarkItem(id=f"prompts/{row.get('id', n)}", benchmark=self.name, prompt=prompt, label=label,
                                     category=row.get("category") or row.get("kind"),
                                     reference=row.get("reference"), target=row.get("target")))
        if not out:
            raise DataError(path, "no prompts" + (f" in split {self.split!r}" if self.split else ""))
        return out


@BENCHMARKS.register("gsm8k")
class GSM8K(Benchmark):
    files = (RemoteFile("https://raw.githubusercontent.com/openai/grade-school-math/"
                        "3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/test.jsonl", "test.jsonl",
                        "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),)

    def parse(self, path: Path) -> list[BenchmarkItem]:
        items = []
        for n, (line, obj) in enumerate(iter_jsonl(path)):
            question, answer = require_field(path, obj, "question", line), require_field(path, obj, "answer", line)
            ref = gsm8k_reference(answer)
            if not ref:
                raise DataError(path, "answer has no final '#### <number>'", line=line)
            items.append(BenchmarkItem(id=f"gsm8k/{n:04d}", benchmark="gsm8k", prompt=question, reference=ref,
                                       extra={"solution": answer}))
        return items


@BENCHMARKS.register("mt-bench")
class MTBench(Benchmark):
    files = (RemoteFile("https://raw.githubusercontent.com/lm-sys/FastChat/0e6d3e4beaab66f4d3f93db72541a4abab8af28d/"
                        "fastchat/llm_judge/data/mt_bench/question.jsonl", "question.jsonl",
                        "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),)

    def parse(self, path: Path) -> list[BenchmarkItem]:
        items = []
        for line, obj in iter_jsonl(path):
            qid = require_field(path, obj, "question_id", line, int)
            turns = require_field(path, obj, "turns", line, list)
            if not turns or not all(isinstance(t, str) for t in turns):
                raise DataError(path, "'turns' must be a non-empty list of strings", line=line)
            refs = obj.get("reference") or []
            items.append(BenchmarkItem(
                id=f"mt-bench/{qid:03d}", benchmark="mt-bench", prompt=turns[0],
                category=require_field(path, obj, "category", line), reference=refs[0] if refs else None,
                extra={"turns": turns, "references": refs}))
        return items
