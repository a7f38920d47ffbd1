"""Next-token choice per row: repetition penalty, temperature, top-k, top-p, seeded per sequence."""

from __future__ import annotations

import torch

from safecls.inference.config import DecodeConfig


def make_generator(cfg: DecodeConfig, device: torch.device) -> torch.Generator | None:
    if cfg.temperature == 0:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(cfg.seed if cfg.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return g


def choose(logits: torch.Tensor, cfg: DecodeConfig, seen: torch.Tensor | None, gen: torch.Generator | None) -> int:
    """logits: (V,) float32 for one row; seen: ids already in the context (for the repetition penalty)."""
    if cfg.repetition_penalty != 1.0 and seen is not None and seen.numel():
        vals = logits[seen]
        logits = logits.clone()
        logits[seen] = torch.where(vals > 0, vals / cfg.repetition_penalty, vals * cfg.repetition_penalty)
    if cfg.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / cfg.temperature
    if cfg.top_k > 0 and cfg.top_k < logits.numel():
        kth = torch.topk(logits, cfg.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        cum = torch.cumsum(probs, -1)
        drop = cum - probs > cfg.top_p  # keep the smallest set whose mass reaches top_p (the top token always)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, idx, sorted_logits)
    probs = torch.softmax(logits, -1)
    return int(torch.multinomial(probs, 1, generator=gen))
