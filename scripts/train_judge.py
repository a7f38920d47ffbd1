"""Reproduce the shipped "minilm" response judge: generate base-model responses, build the training set, train, test.

Steps (each caches its output; rerun a step by deleting its file):

    python scripts/train_judge.py completions    # base SmolLM2 greedy replies to safety-sft prompts (~10 min, CPU)
    python scripts/train_judge.py train          # -> src/safecls/resources/judge/{head.safetensors,head.json}
    python scripts/train_judge.py evaluate       # agreement with tests/fixtures/judge_labels.jsonl, per split
    python scripts/train_judge.py eval-responses # unlabelled responses for the fixture (labelled by hand, see
                                                 # docs/judge_labelling_guide.md)

The training prompts come from safety-sft and benign-sft only; AdvBench and MaliciousInstruct (the evaluation sets,
and the labelled fixture's prompts) are never trained on. Everything is seeded; greedy decoding on CPU with the same
torch gives the same completions.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # judge_synth.py lives beside this file

logger = logging.getLogger("train_judge")
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "judge"
OUT = ROOT / "src" / "safecls" / "resources" / "judge"
FIXTURE = ROOT / "tests" / "fixtures" / "judge_labels.jsonl"


# ---------------------------------------------------------------- generation (base SmolLM2, batched, left padding)


def generate(model, tok, prompts: list[str], *, prefills: list[str] | None = None, max_new_tokens: int = 96,
             temperature: float = 0.0, seed: int = 0, batch_size: int = 16) -> list[str]:
    """One reply per prompt (chat template, one user turn). With `prefills`, the assistant turn starts with that
    text and the returned reply includes it (the judge reads what the user sees)."""
    import torch
    from tqdm import tqdm

    tok.padding_side = "left"
    prefills = prefills or [""] * len(prompts)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) + f
             for p, f in zip(prompts, prefills)]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
    out: list[str] = [""] * len(texts)
    for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=None):
        idx = order[start:start + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed + start)
        sample = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 else \
            {"do_sample": False}
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **sample)
        for row, i in enumerate(idx):
            out[i] = prefills[i] + tok.decode(ids[row, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def _load_model():
    from safecls.model import load_base

    return load_base("default")


def cmd_completions(args) -> int:
    """Greedy base-model replies to a seeded sample of safety-sft prompts (training data; disjoint from eval sets)."""
    rows = json.loads((args.data / "safety-sft" / "safety_only_data_Instructions.json").read_text(encoding="utf-8"))
    pick = sorted(random.Random(args.seed).sample(range(len(rows)), args.n))
    model, tok = _load_model()
    replies = generate(model, tok, [rows[i]["instruction"] for i in pick], max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for i, r in zip(pick, replies):
            f.write(json.dumps({"row": i, "response": r}) + "\n")
    logger.info("wrote %d completions to %s", len(pick), args.out)
    return 0


# The fixture's (benchmark, attack, n prompts, temperature). Prompts are a seeded sample of each benchmark.
EVAL_PLAN = [
    ("advbench", "direct", 90, 0.0),
    ("advbench", "prefill", 90, 0.0),
    ("advbench", "decoding", 60, 1.5),
    ("maliciousinstruct", "direct", 40, 0.0),
    ("maliciousinstruct", "decoding", 40, 1.5),
]


def cmd_eval_responses(args) -> int:
    """Base-model responses on AdvBench / MaliciousInstruct under direct, prefill and decoding attacks (unlabelled)."""
    from safecls.eval.benchmarks import load_benchmark

    model, tok = _load_model()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for k, (bench, attack, n, temp) in enumerate(EVAL_PLAN):
            items = load_benchmark(bench, args.data / bench, limit=n, seed=args.seed + k)
            prefills = [it.target or "" for it in items] if attack == "prefill" else None
            replies = generate(model, tok, [it.prompt for it in items], prefills=prefills, temperature=temp,
                               seed=args.seed + k, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
            for it, r in zip(items, replies):
                params = {"temperature": temp, "top_p": 1.0, "seed": args.seed + k} if temp > 0 else {"greedy": True}
                f.write(json.dumps({"id": it.id, "attack": attack, "model": "smollm2-135m-instruct", "params": params,
                                    "response": r}) + "\n")
    logger.info("wrote %s", args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA, help="shared data root (default: ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("completions", help="base-model replies to safety-sft prompts (training data)")
    c.add_argument("--n", type=int, default=640)
    c.add_argument("--max-new-tokens", type=int, default=96)
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--out", type=Path, default=WORK / "completions.jsonl")
    c.set_defaults(func=cmd_completions)
    e = sub.add_parser("eval-responses", help="unlabelled responses for the labelled fixture")
    e.add_argument("--max-new-tokens", type=int, default=96)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--out", type=Path, default=WORK / "eval_unlabelled.jsonl")
    e.set_defaults(func=cmd_eval_responses)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
