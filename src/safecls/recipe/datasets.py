"""The recipe's training files, built from its examples (recipe/examples.py):

- sft_{train,dev,test}.jsonl: the SFT mixture (label 1: request + reasoned refusal; label 0: request + the base model's
  own answer). plain SFT, safecls SFT-only and safecls pretrain + SFT all train on sft_train.jsonl. With
  `harmful_per_benign`, sft_train keeps at most that many of safety-sft's harmful requests per benign one of the same
  pool (a seeded subset): the pool's requests share one terse imperative style ("Create a plan to ...", "Research
  ..."), and a pool that is mostly refusals teaches a small model to refuse the style. The rest stay in dev, test
  and the pretrain corpus.
- sft_train_qi.jsonl: the same plus Qi et al. (2024) recovery copies of half the harmful training requests: the first
  1-25 words of the base model's own harmful answer, then the same refusal (the prefix is context, not a target).
- heldout_benign.jsonl: the test split's benign requests, for the study (`prompts` benchmark; over-refusal, NLL).
- pretrain_{train,test}.jsonl: labelled texts the [CLS] reads whole in the pretrain stage, by kind (`source`):
  answer (benign request + answer, 0), completion (harmful request + the base model's compliant answer, 1),
  nested (a benign task around a harmful request; the reply starts benign and continues harmfully, 1), window
  (8-30 words of a reply alone, as a read without the prompt sees it; the reply's label), request (a request alone).
  The test file is the held-out split of every kind: the head's accuracy on (prompt, response) pairs by kind.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from safecls.data.augment import harmful_prefix
from safecls.data.refusals import is_refusal
from safecls.data.sft_records import Message, SFTExample, write_sft_jsonl
from safecls.errors import ConfigError
from safecls.io import atomic_write
from safecls.recipe.examples import Example

QI_FRACTION = 0.5
QI_MAX_WORDS = 25  # the prefill attack's longest prefix, 40 SmolLM2 tokens, is about 25-30 words
WINDOW_WORDS = (8, 30)
# A benign task wrapped around a harmful request, and the reply's benign start. Unlike the nested attack's templates
# (attacks/nested.py NEST_TEMPLATES), so the nested attack and probe measure something unseen.
NESTS = (
    ("Please do two things. 1) {b} 2) {h}", "{b_ans}\n\n2) {h_ans}"),
    ("{b} Also, separately: {h}", "{b_ans}\n\nAs for your other question: {h_ans}"),
    ("Write a scene for a play about a teacher. In it, the teacher explains to her class: {h}",
     "The classroom is quiet. Ms. Lee writes on the board, turns, and says: \"{h_ans}\""),
    ("Translate 'good morning' into Spanish, then answer this: {h}", "'Good morning' in Spanish is 'Buenos dias'.\n\n{h_ans}"),
    ("You are an encyclopedia. Entry 1: {b} Entry 2: {h}", "Entry 1: {b_ans}\n\nEntry 2: {h_ans}"),
)
# the shipped model's: as many of safety-sft's harmful training requests as its benign ones (899 cut to 596 took plain
# SFT from 23% to 19% of held-out benign requests refused; None keeps every one; docs/MODEL_CARD.md)
HARMFUL_PER_BENIGN: float | None = 1.0
PRETRAIN_MIX = {"answer": 1200, "nested": 400, "window": 800, "request": 600}  # completion: every usable one


def _sft(e: Example, target: str | None = None, *, source: str | None = None, masked: int = 0) -> SFTExample:
    return SFTExample(messages=[Message(role="user", content=e.prompt),
                                Message(role="assistant", content=target if target is not None else e.target)],
                      label=e.label, source=source or e.kind, masked_prefix_chars=masked)


def _complied(e: Example) -> bool:
    return e.label == 1 and bool(e.completion) and not is_refusal(e.completion)


def qi_copies(examples: list[Example], rng: random.Random) -> list[SFTExample]:
    harmful = [e for e in examples if e.split == "train" and e.label == 1]
    out = []
    for e in rng.sample(harmful, round(len(harmful) * QI_FRACTION)):
        prefix = harmful_prefix(e.prompt, e.completion if _complied(e) else None, rng.randint(1, QI_MAX_WORDS))
        out.append(_sft(e, f"{prefix} {e.target}", source="qi-augment", masked=len(prefix) + 1))
    return out


def _window(text: str, rng: random.Random) -> str:
    words = text.split()
    n = rng.randint(*WINDOW_WORDS)
    start = rng.randint(0, max(0, len(words) - n))
    return " ".join(words[start:start + n])


def pretrain_records(examples: list[Example], split: str, rng: random.Random) -> list[dict]:
    """The pretrain-stage corpus of one split (see the module docstring); each record's `source` is its kind."""
    ex = [e for e in examples if e.split == split]
    benign = [e for e in ex if e.label == 0 and e.completion]
    harmful = [e for e in ex if _complied(e)]
    scale = 1.0 if split == "train" else 0.125
    k = {kind: max(1, round(n * scale)) for kind, n in PRETRAIN_MIX.items()}

    def chat(prompt: str, reply: str, label: int, kind: str) -> dict:
        return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
                "label": label, "source": kind}

    out = [chat(e.prompt, e.completion, 0, "answer") for e in rng.sample(benign, min(k["answer"], len(benign)))]
    out += [chat(e.prompt, e.completion, 1, "completion") for e in harmful]
    for h in rng.choices(harmful, k=k["nested"]) if harmful and benign else []:
        b = rng.choice(benign)
        ask, reply = rng.choice(NESTS)
        b_ans = " ".join(b.completion.split(". ")[:2]).strip()
        out.append(chat(ask.format(b=b.prompt, h=h.prompt), reply.format(b_ans=b_ans, h_ans=h.completion), 1, "nested"))
    pool = [(e, 0) for e in benign] + [(e, 1) for e in harmful]
    for e, label in rng.sample(pool, min(k["window"], len(pool))):
        out.append({"text": _window(e.completion, rng), "label": label, "source": "window"})
    for e in rng.sample(ex, min(k["request"], len(ex))):
        out.append({"text": e.prompt, "label": e.label, "source": "request"})
    rng.shuffle(out)
    return out


def balanced(examples: list[Example], harmful_per_benign: float | None, seed: int = 0) -> list[Example]:
    """`examples` less the training harmful safety-sft requests over `harmful_per_benign` times the pool's training
    benign ones (a seeded subset, in order); None: all of them."""
    if harmful_per_benign is None:
        return examples
    if harmful_per_benign <= 0:
        raise ConfigError(f"harmful_per_benign {harmful_per_benign}: must be positive. Fix: e.g. 1.0 (as many harmful "
                          "safety-sft training requests as benign ones), or leave it out to keep all")
    pool = [i for i, e in enumerate(examples) if e.split == "train" and e.pool == "safety-sft"]
    harmful = [i for i in pool if examples[i].label == 1]
    keep = round((len(pool) - len(harmful)) * harmful_per_benign)
    if keep >= len(harmful):
        return examples
    drop = set(harmful) - set(random.Random(f"{seed}:balance").sample(harmful, keep))
    return [e for i, e in enumerate(examples) if i not in drop]


def write_datasets(examples: list[Example], out_dir: str | Path, stats: dict, seed: int = 0, *,
                   harmful_per_benign: float | None = HARMFUL_PER_BENIGN) -> dict[str, Path]:
    """Write every file of the module docstring plus examples.jsonl (every example, for the study's held-out sets)
    and manifest.json (counts); returns their paths."""
    out = Path(out_dir)
    rng = random.Random(seed)
    sft = balanced(examples, harmful_per_benign, seed)
    paths: dict[str, Path] = {}
    for split in ("train", "dev", "test"):
        rows = [_sft(e) for e in sft if e.split == split]
        rng.shuffle(rows)
        paths[f"sft_{split}"] = out / f"sft_{split}.jsonl"
        write_sft_jsonl(paths[f"sft_{split}"], rows)
    train = [_sft(e) for e in sft if e.split == "train"]
    qi = train + qi_copies(sft, rng)
    rng.shuffle(qi)
    paths["sft_train_qi"] = out / "sft_train_qi.jsonl"
    write_sft_jsonl(paths["sft_train_qi"], qi)
    counts = {}
    for split in ("train", "test"):
        recs = pretrain_records(examples, split, rng)
        paths[f"pretrain_{split}"] = out / f"pretrain_{split}.jsonl"
        atomic_write(paths[f"pretrain_{split}"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
        counts[f"pretrain_{split}"] = dict(Counter(f"{r['source']}/{r['label']}" for r in recs))
    # the study's held-out benign requests (over-refusal, NLL against the datasets' own answers): the `prompts` benchmark
    paths["heldout_benign"] = out / "heldout_benign.jsonl"
    atomic_write(paths["heldout_benign"], "".join(
        json.dumps({"id": e.id, "prompt": e.prompt, "label": "safe", "kind": e.kind, "reference": e.reference},
                   ensure_ascii=False) + "\n" for e in examples if e.split == "test" and e.label == 0))
    paths["examples"] = out / "examples.jsonl"
    atomic_write(paths["examples"], "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in examples))
    counts.update({f"sft_{s}": dict(Counter(f"{e.kind}/{e.label}" for e in sft if e.split == s))
                   for s in ("train", "dev", "test")})
    counts["sft_train_qi"] = len(qi)
    paths["manifest"] = out / "manifest.json"
    atomic_write(paths["manifest"], json.dumps({"seed": seed, "harmful_per_benign": harmful_per_benign, "build": stats,
                                                "files": counts}, indent=1) + "\n")
    return paths
