"""Decode speed: the plain engine vs transformers' generate(), and each re-classification schedule vs the plain engine.

    python benchmarks/bench_engine.py [--model default] [--new 128] [--batches 1 16] [--repeats 2]

Ratios are taken in one process on the same inputs (these machines are noisy, about +-30%). Every run generates
exactly --new tokens (eos suppressed), so tokens/s compare like for like. The head is untrained and the threshold
is set to 1 so no intervention changes the work: this measures the cost of the evaluations alone.
"""

from __future__ import annotations

import argparse
import time

import torch

from safecls.inference import DecodeConfig, Engine
from safecls.model import SafeClsModel, load_base

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how vaccines train the immune system.",
    "Give me three ideas for a birthday party for a ten-year-old.",
    "What is the difference between TCP and UDP?",
]


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    base, tok = load_base(args.model)
    ref, _ = load_base(args.model)
    model = SafeClsModel.from_base(base, tok)
    plain = Engine.plain(ref, tok)
    eng = Engine(model)
    n = args.new
    for B in args.batches:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(B)]
        tok.padding_side = "left"
        enc = tok.apply_chat_template([[{"role": "user", "content": p}] for p in prompts], add_generation_prompt=True,
                                      return_tensors="pt", padding=True, return_dict=True)
        with torch.no_grad():
            t_hf = _time(lambda enc=enc: ref.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False), args.repeats)
        cfg = DecodeConfig(max_new_tokens=n, min_new_tokens=n, policy="low")
        t_plain = _time(lambda prompts=prompts, cfg=cfg, B=B: plain.generate(prompts, cfg, batch_size=B), args.repeats)
        print(f"B={B:3d} generate(): {B * n / t_hf:8.1f} tok/s | plain engine: {B * n / t_plain:8.1f} tok/s "
              f"| engine/generate speed ratio {t_hf / t_plain:.3f}x (target >= 0.95)")
        for sched in ("first", "every", "periodic", "annealing"):
            for fused in (True, False) if sched == "every" else (True,):
                c = DecodeConfig(max_new_tokens=n, min_new_tokens=n, policy="medium", schedule=sched, threshold=0.999999,
                                 fused=fused)
                t = _time(lambda prompts=prompts, c=c, B=B: eng.generate(prompts, c, batch_size=B), args.repeats)
                tag = sched + ("" if fused else " (separate pass)")
                print(f"        schedule {tag:26s} time vs plain engine {t / t_plain:.3f}x")


if __name__ == "__main__":
    main()
