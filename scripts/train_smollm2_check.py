"""Documented run: a short LoRA sft-stage run on the real SmolLM2-135M-Instruct, then the head's held-out accuracy.

Too slow for CI on 2 CPU cores (see the report in the training issue). Builds a ~300-example mixture from
../shared/data (benign: alpaca_en_demo + LIMA; malicious: Safety-Tuned LLaMAs) with the data room's builder,
trains with safecls.train.train, and scores held-out prompts (and the first 50 AdvBench goals) with model.classify.

    python scripts/train_smollm2_check.py [--data ../shared/data] [--out runs/check-smollm2] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("runs/check-smollm2"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--per-label", type=int, default=170)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--head-lr", type=float, default=2e-3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from safecls.data.mixture import SFTMixtureConfig, SourceSpec, build_sft_mixture
    from safecls.train import TrainConfig, train

    mix = build_sft_mixture(SFTMixtureConfig(
        benign=[SourceSpec(path=str(args.data / "benign-sft/alpaca_en_demo.json")),
                SourceSpec(path=str(args.data / "benign-sft/lima.json"), limit=300)],
        malicious=[SourceSpec(path=str(args.data / "safety-sft/safety_only_data_Instructions.json"),
                              format="safety-tuned-llamas")],
        n_per_label=args.per_label, heldout_fraction=0.12, max_chars=1500, seed=0,
        output_dir=str(args.out / "data")))
    cfg = TrainConfig(model="base", stage="sft", lambda_cls=0.1, train_file=str(mix.paths["train"]),
                      max_length=args.max_length, lora={"r": 16, "alpha": 32, "dropout": 0.05}, lr=2e-4,
                      head_lr=args.head_lr, warmup_steps=3, batch_size=args.batch, max_steps=args.steps, seed=0, log_every=2,
                      output_dir=str(args.out / "train"), resume=True)
    t0 = time.perf_counter()
    res = train(cfg)
    train_s = time.perf_counter() - t0
    model = res.model
    held = mix.heldout
    t1 = time.perf_counter()
    p = model.classify([[m.model_dump() for m in ex.prompt_messages] for ex in held], batch_size=16)
    acc = sum((pi >= 0.5) == bool(ex.label) for pi, ex in zip(p, held)) / len(held)
    import csv

    with (args.data / "advbench/harmful_behaviors.csv").open(encoding="utf-8") as f:
        goals = [r["goal"] for r in csv.DictReader(f)][:50]
    adv = model.classify(goals, batch_size=16)
    summary = {"train_examples": len(mix.train), "heldout": len(held), "steps": res.steps, "train_wall_s": round(train_s, 1),
               "tokens": res.tokens, "tokens_per_s": round(res.tokens / train_s, 1),
               "first_loss": res.losses[0] if res.losses else None, "last_metrics": res.metrics[-1].model_dump() if res.metrics else None,
               "heldout_head_acc": acc, "advbench50_flagged": sum(x >= 0.5 for x in adv) / len(adv),
               "classify_wall_s": round(time.perf_counter() - t1, 1)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
