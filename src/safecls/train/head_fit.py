"""Re-fit the safety head, alone, on the [CLS] states a trained model reads.

In the sft stage the head trains beside L_sft at λ 0.1, for as many steps as the language model needs, and from the
request read only; its reads of replies were last trained in the pretrain stage, before the sft stage moved the states
under it. This step freezes the model and fits the head (a linear map over the final state at [CLS], or over several
layers' states there: `layers`) by L2-regularised logistic regression on the states of every read the engine makes:
the request read (a harmful or benign request) and reads over (request, reply so far) at random points of benign
answers and of harmful completions. Nothing else changes, so the language model, and so utility, is the trained
model's; calibration (threshold, tau) must be chosen again.

    safecls fit-head --config configs/recipe/head.yaml
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from safecls.config import StrictModel
from safecls.data.files import iter_jsonl
from safecls.errors import DataError, ModelError
from safecls.io import atomic_write
from safecls.model.safecls_model import FINAL
from safecls.train.logistic import Logistic, auc

logger = logging.getLogger(__name__)

# Harmful reads of a nested reply start where the benign part ends, which the corpus does not mark: only its whole
# reply is read. The kinds with a label for any point of the reply are cut.
CUT_KINDS = ("answer", "completion")
WHOLE_KINDS = ("nested",)
MIN_CUT_WORDS = 4  # the first read of a reply comes after a few tokens (schedules start at 1-10 generated tokens)


class HeadFitConfig(StrictModel):
    model: str = Field(description="The trained safecls checkpoint whose head is re-fit (e.g. runs/recipe/sft/final).")
    requests_file: list[str] = Field(min_length=1, description="SFT JSONL files (the recipe's sft_train.jsonl and "
                                     "sft_train_reworded.jsonl): each record's request, with its label, is one request "
                                     "read.")
    replies_file: str | None = Field(None, description="The pretrain corpus (pretrain_train.jsonl): its chat records "
                                                       "of kind answer (0), completion (1) and nested (1) are read "
                                                       "over (request, reply so far). null: request reads only.")
    eval_requests_file: list[str] = Field(default_factory=list, description="Held-out SFT JSONL files (sft_test.jsonl,"
                                          " sft_test_reworded.jsonl): AUC before and after, in fit.json.")
    eval_replies_file: str | None = Field(None, description="Held-out pretrain corpus (pretrain_test.jsonl): AUC "
                                                            "before and after, by kind, in fit.json.")
    cuts: int = Field(2, ge=0, description="Reads per answer or completion at random word counts, besides the whole "
                                           "reply.")
    l2: list[float] = Field(default_factory=lambda: [1e-3, 1e-2, 1e-1], min_length=1,
                            description="L2 penalties on the standardised weights (mean loss + l2 |w|^2 / 2) tried; "
                                        "more than one: the best mean AUC over 5 folds of the training reads (folds "
                                        "by request, so reads of one reply stay together) wins.")
    layers: list[list[int]] = Field(default_factory=lambda: [[FINAL]], min_length=1,
                                    description="Which states at [CLS] the new head reads, concatenated (-1: the final "
                                                "state, k: after block k); more than one set: chosen with l2 by the "
                                                "same folds. Each read takes every layer of every set once.")
    read_prompt: bool = Field(True, description="Reply reads see the request too, as the engine's reads do by default.")
    batch_size: int = Field(16, gt=0)
    seed: int = 0
    output_dir: str = Field(description="Run folder: final/ (the checkpoint with the new head, no calibration), "
                                        "fit.json (data counts, AUC before and after), config.yaml and features.npz "
                                        "(the states read, per file: a rerun reads only files it has not read "
                                        "before, so trying l2 or layers costs seconds).")

    @field_validator("requests_file", "eval_requests_file", mode="before")
    @classmethod
    def _files(cls, v: Any) -> Any:
        return [] if v is None else [v] if isinstance(v, str) else v

    @field_validator("l2", mode="before")
    @classmethod
    def _one_l2(cls, v: Any) -> Any:
        return [v] if isinstance(v, int | float) else v

    @field_validator("layers", mode="before")
    @classmethod
    def _one_set(cls, v: Any) -> Any:
        return [v] if isinstance(v, list) and v and all(isinstance(k, int) for k in v) else v

    def read_layers(self, own: Sequence[int]) -> tuple[int, ...]:
        """Every layer any set reads, and the model's own head's (for the AUC before), each once, in order."""
        return tuple(dict.fromkeys([k for ks in self.layers for k in ks] + list(own)))

    def reads_key(self, path: str, own: Sequence[int] = (FINAL,)) -> str:
        """What decides the states read from one file: a rerun reuses features.npz's states of every file whose key
        is unchanged."""
        parts = [self.model, str(self.cuts), str(self.seed), str(self.read_prompt), str(self.read_layers(own)),
                 f"{path}:{Path(path).stat().st_size}:{Path(path).stat().st_mtime_ns}"]
        return "|".join(parts)

@dataclass(frozen=True, slots=True)
class Read:
    prompt: object  # a Prompt: a string or chat messages
    reply: str | None  # None: the request read
    label: int
    kind: str


def _records(path: str) -> list[dict]:
    out = []
    for n, obj in iter_jsonl(path):
        if not isinstance(obj.get("label"), int) or obj["label"] not in (0, 1):
            raise DataError(path, "a record without a 0/1 label", line=n, fix="label: 1 (harmful) or 0 (benign)")
        out.append(obj)
    return out


def cut_reply(reply: str, words: int) -> str:
    return " ".join(reply.split()[:words])


def request_reads(records: Sequence[dict]) -> list[Read]:
    out = []
    for r in records:
        if "messages" not in r:
            continue
        users = [m for m in r["messages"] if m["role"] != "assistant"]
        out.append(Read(users, None, int(r["label"]), f"request/{r.get('source', 'sft')}"))
    return out


def reply_reads(records: Sequence[dict], cuts: int, rng: random.Random) -> list[Read]:
    """Reads over (request, reply so far) of the pretrain corpus's chat records (module docstring)."""
    out = []
    for r in records:
        kind = r.get("source")
        if "messages" not in r or kind not in CUT_KINDS + WHOLE_KINDS:
            continue
        prompt, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        out.append(Read(prompt, reply, int(r["label"]), kind))
        n = len(reply.split())
        if kind in CUT_KINDS and n > MIN_CUT_WORDS:
            for k in sorted({rng.randint(MIN_CUT_WORDS, n - 1) for _ in range(cuts)}):
                out.append(Read(prompt, cut_reply(reply, k), int(r["label"]), f"{kind} (cut)"))
    return out


def features(model, reads: Sequence[Read], batch_size: int, read_prompt: bool, layers: Sequence[int],
             chunk: int = 512) -> np.ndarray:
    """(N, len(layers) H) [CLS] states, request reads and reply reads each batched as `classify` reads them; a log
    line per `chunk` reads (tens of minutes on a CPU)."""
    x = np.zeros((len(reads), len(layers) * model.hidden_size), np.float32)
    t0, done = time.time(), 0
    for replies in (False, True):
        idx = [i for i, r in enumerate(reads) if (r.reply is not None) == replies]
        for lo in range(0, len(idx), chunk):
            part = idx[lo:lo + chunk]
            prompts = [reads[i].prompt for i in part]
            x[part] = model.cls_features(prompts, [reads[i].reply for i in part] if replies else None,
                                         batch_size=batch_size, read_prompt=read_prompt, layers=tuple(layers)).numpy()
            done += len(part)
            logger.info("fit-head: %d/%d reads (%.0f a minute)", done, len(reads), done / (time.time() - t0) * 60)
    return x


def columns(read: Sequence[int], layers: Sequence[int], hidden: int) -> np.ndarray:
    """The feature columns of `layers`' states, in that order, in features read over `read`."""
    return np.concatenate([np.arange(hidden) + read.index(k) * hidden for k in layers])


def set_head(model, w: np.ndarray, b: float, layers: Sequence[int]) -> None:
    """Write sigmoid(x @ w + b) into a 2-way softmax head over `layers`: benign logit 0, malicious logit x @ w + b."""
    from safecls.model.safecls_model import BENIGN, MALICIOUS

    if tuple(layers) != model.head_layers:
        model.set_head(torch.nn.Linear(len(w), 2).to(dtype=model.dtype, device=model.device), tuple(layers))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.weight[MALICIOUS] = torch.as_tensor(w, dtype=model.head.weight.dtype)
        model.head.bias[MALICIOUS] = b
        assert not model.head.weight[BENIGN].any()


def _auc_by_kind(reads: Sequence[Read], before: Sequence[float], after: Sequence[float]) -> dict[str, dict]:
    """AUC of each harmful kind against the benign reads of the same family (requests vs requests, replies vs
    benign answers), before and after the fit."""
    out = {}
    for kind in sorted({r.kind for r in reads if r.label == 1}):
        neg_family = "request/" if kind.startswith("request/") else "answer"
        pos = [i for i, r in enumerate(reads) if r.kind == kind and r.label == 1]
        neg = [i for i, r in enumerate(reads) if r.label == 0 and r.kind.startswith(neg_family)]
        out[kind] = {"n_pos": len(pos), "n_neg": len(neg),
                     "auc_before": round(auc([before[i] for i in pos], [before[i] for i in neg]), 4),
                     "auc_after": round(auc([after[i] for i in pos], [after[i] for i in neg]), 4)}
    return out


FOLDS = 5


def choose(x: np.ndarray, y: Sequence[int], reads: Sequence[Read], options: dict[str, tuple[np.ndarray, float]]
           ) -> tuple[str, dict]:
    """Of `options` ({name: (feature columns, l2)}), the one with the best mean held-out-fold AUC (folds by request),
    and every option's mean."""
    if len(options) == 1:
        return next(iter(options)), {}
    import zlib

    fold = np.array([zlib.crc32(str(r.prompt).encode()) % FOLDS for r in reads])
    y = np.asarray(y)
    means = {}
    for name, (cols, l2) in options.items():
        aucs = []
        for k in range(FOLDS):
            tr, te = fold != k, fold == k
            p = Logistic(l2).fit(x[tr][:, cols], y[tr]).predict(x[te][:, cols])
            aucs.append(auc([q for q, t in zip(p, y[te]) if t == 1], [q for q, t in zip(p, y[te]) if t == 0]))
        means[name] = round(float(np.mean(aucs)), 4)
        logger.info("fit-head: %s: mean fold AUC %.4f", name, means[name])
    return max(means, key=means.get), means


def fit_head(cfg: HeadFitConfig) -> dict:
    """Fit, write output_dir/final and fit.json; returns fit.json's content."""
    import yaml

    from safecls.model import SafeClsModel
    from safecls.model.safecls_model import MALICIOUS

    t0 = time.time()
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    rng = random.Random(cfg.seed)
    model = SafeClsModel.from_pretrained(cfg.model)
    if not model.with_cls:
        raise ModelError(f"{cfg.model} was trained without a [CLS] token: it has no head to fit. Fix: model: a "
                         "checkpoint trained with with_cls: true")
    model.eval()

    read = cfg.read_layers(model.head_layers)
    own = columns(read, model.head_layers, model.hidden_size)

    def old_head(x: np.ndarray) -> list[float]:
        with torch.no_grad():
            logits = model.head(torch.as_tensor(x[:, own], dtype=model.dtype)).float()
        return torch.softmax(logits, -1)[:, MALICIOUS].tolist()

    # one part per file, in this order (the replies' cuts draw from rng in turn); each part's states are cached apart
    parts = [(f, request_reads(_records(f)), "train") for f in cfg.requests_file]
    parts += [(f, reply_reads(_records(f), cfg.cuts, rng), side)
              for f, side in ((cfg.replies_file, "train"), (cfg.eval_replies_file, "held")) if f]
    parts += [(f, request_reads(_records(f)), "held") for f in cfg.eval_requests_file]
    cache = out_dir / "features.npz"
    stored = dict(np.load(cache)) if cache.is_file() else {}
    states = []
    for f, reads, _ in parts:
        key = cfg.reads_key(f, model.head_layers)
        name = "x" + hashlib.sha256(key.encode()).hexdigest()[:16]
        if name in stored:
            logger.info("fit-head: the states of %d reads of %s from %s", len(reads), f, cache)
        else:
            logger.info("fit-head: reading the [CLS] states of %d reads of %s at layers %s", len(reads), f,
                        list(read))
            stored[name] = features(model, reads, cfg.batch_size, cfg.read_prompt, read)
            tmp = out_dir / "features.tmp.npz"
            np.savez(tmp, **stored)
            tmp.replace(cache)
        states.append(stored[name])

    def side(name: str) -> tuple[list[Read], np.ndarray]:
        got = [i for i, p in enumerate(parts) if p[2] == name]
        return ([r for i in got for r in parts[i][1]],
                np.concatenate([states[i] for i in got]) if got else np.zeros((0, len(read) * model.hidden_size)))

    (train, x), (held, xh) = side("train"), side("held")
    counts = dict(Counter(f"{r.kind}/{r.label}" for r in train))
    y = [r.label for r in train]
    options = {f"layers {ks} l2 {l2:g}": (tuple(ks), l2) for ks in cfg.layers for l2 in cfg.l2}
    best, folds = choose(x, y, train, {k: (columns(read, ks, model.hidden_size), l2) for k, (ks, l2) in options.items()})
    layers, l2 = options[best]
    cols = columns(read, layers, model.hidden_size)
    fit = Logistic(l2).fit(x[:, cols], y)
    report = {"model": cfg.model, "layers": list(layers), "l2": l2, "fold_auc": folds,
              "train": {"counts": counts, "by_kind": _auc_by_kind(train, old_head(x), fit.predict(x[:, cols]))}}
    if held:
        report["held_out"] = {"counts": dict(Counter(f"{r.kind}/{r.label}" for r in held)),
                              "by_kind": _auc_by_kind(held, old_head(xh), fit.predict(xh[:, cols]))}
    w, b = fit.linear()
    set_head(model, w, b, layers)
    model.calibration = None  # the threshold was chosen for the old head's scores
    model.save_pretrained(out_dir / "final")
    report["wall_s"] = round(time.time() - t0, 1)
    atomic_write(out_dir / "fit.json", json.dumps(report, indent=1) + "\n")
    logger.info("fit-head: %s in %.0f s", json.dumps(report.get("held_out", report["train"])["by_kind"]),
                report["wall_s"])
    return report
