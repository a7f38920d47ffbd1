"""`safecls recipe answers|data|all`: the shipped model's recipe, by step or whole (docs/MODEL_CARD.md)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def pool_limits(given: list[str]) -> dict[str, int]:
    """The recipe's prompts per benign pool (self_answers.LIMITS) with `--limit POOL=N` applied."""
    from safecls.errors import ConfigError
    from safecls.recipe.self_answers import LIMITS

    out = dict(LIMITS)
    for item in given:
        pool, _, n = item.partition("=")
        if pool not in LIMITS or not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--limit {item}: expected POOL=N with POOL one of {', '.join(LIMITS)} and N a positive "
                              "integer. Fix: e.g. --limit lima=1000")
        out[pool] = int(n)
    return out


def harmful_per_benign(given: str | None) -> float | None:
    """`--harmful-per-benign`: a positive number, `all` (None: keep every harmful request) or unset (the recipe's)."""
    from safecls.errors import ConfigError
    from safecls.recipe.datasets import HARMFUL_PER_BENIGN

    if given is None:
        return HARMFUL_PER_BENIGN
    if given == "all":
        return None
    try:
        value = float(given)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"--harmful-per-benign {given}: expected a positive number or 'all'. Fix: e.g. "
                          "--harmful-per-benign 1.0 (as many harmful safety-sft training requests as benign ones)")
    return value


def _answers(args: argparse.Namespace) -> int:
    from safecls.recipe.self_answers import self_answers

    got = self_answers(args.data_dir, Path(args.out) / "self_answers.jsonl", model=args.model,
                       limits=pool_limits(args.limit))
    print(f"{len(got)} answers in {Path(args.out) / 'self_answers.jsonl'}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from safecls.recipe.datasets import write_datasets
    from safecls.recipe.examples import build_examples
    from safecls.recipe.reworded import write_reworded_splits
    from safecls.recipe.self_answers import self_answers

    out = Path(args.out)
    limits = pool_limits(args.limit)
    answers = self_answers(args.data_dir, out / "self_answers.jsonl", model=args.model, generate=not args.cached_only,
                           limits=limits)
    examples, stats = build_examples(args.data_dir, answers, seed=args.seed, cache=out / "cache", limits=limits)
    paths = write_datasets(examples, out / "data", stats, seed=args.seed,
                           harmful_per_benign=harmful_per_benign(args.harmful_per_benign))
    files = json.loads(paths["manifest"].read_text())["files"]
    files.update({f"sft_{k}_reworded": v for k, v in
                  write_reworded_splits(out / "data", args.data_dir, out / "cache", args.seed).items()})
    print(json.dumps(files, indent=1))
    print(f"written to {out / 'data'}")
    return 0


def _all(args: argparse.Namespace) -> int:
    from safecls.recipe.pipeline import run_recipe

    final = run_recipe(args.data_dir, args.out)
    print(f"trained and calibrated: {final}")
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("recipe", help="build the data of the shipped model's recipe (answers, labels, splits)")
    rs = r.add_subparsers(dest="recipe_command", metavar="STEP", required=True)
    for name, func, text in (("answers", _answers, "the base model's own answers to every pool prompt (cached)"),
                             ("data", _data, "examples, splits and the SFT / Qi / pretrain files (runs answers first)"),
                             ("all", _all, "answers, data, pretrain and sft stages, calibration: the shipped model "
                                           "from scratch (hours on a CPU; every step resumes)")):
        p = rs.add_parser(name, help=text)
        p.add_argument("--data-dir", default="../shared/data", help="the shared/data-style folder")
        p.add_argument("--out", default="runs/recipe", help="where answers and data/ go")
        p.add_argument("--model", default="base", help="the model whose answers are collected (base: the embedded SmolLM2)")
        p.add_argument("--seed", type=int, default=0)
        if name != "all":
            p.add_argument("--limit", action="append", default=[], metavar="POOL=N",
                           help="prompts drawn of a benign pool, a seeded subset (default: the shipped model's, "
                                "LIMITS in recipe/self_answers.py); repeatable")
        if name == "data":
            p.add_argument("--cached-only", action="store_true", help="use the answers already cached; generate none")
            p.add_argument("--harmful-per-benign", metavar="R|all",
                           help="sft_train keeps at most R of safety-sft's harmful requests per benign one of that "
                                "pool, or all of them (default: the shipped model's, HARMFUL_PER_BENIGN in "
                                "recipe/datasets.py)")
        p.set_defaults(func=func)
